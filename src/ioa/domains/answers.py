"""One answer extractor and one checker for every numeric domain (DESIGN §7: habits the models really have).

`extract_answer` finds the final answer in a model's reply, in this order of trust:
1. the last `#### ...` line that holds a number (the last number on it: the 0.5B teacher writes
   `#### 184 + 598 = 782`; the student loops `#### #1 ... #### #32`);
2. the last `\\boxed{...}` (the 1.5B teacher prefers it even when asked for `####`);
3. the last "the answer is X" / "Answer: X";
4. the last number anywhere in the reply.
It returns the answer's text with thousands separators, currency and LaTeX removed (`"1234"`, `"3/4"`,
`"1 1/2"`, `"-0.5"`); `answers_match` compares numerically (exact fractions, relative tolerance for floats)
or, for non-numeric references, as normalised strings.
"""

from __future__ import annotations

import re
from fractions import Fraction

# The instruction every domain puts in its system message, so that all probes ask for one answer format.
SOLVE_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step, one short step per line. "
    "Then write the final answer alone on the last line in the form '#### <answer>', "
    "for example '#### 42'."
)

REL_TOL = 1e-6

# A plain number: thousands-grouped or not, optional decimals. The minus sign counts only where it cannot
# be a binary minus ("10-3" is not -3), and digits glued to a preceding digit or point are not a new number.
_INT = r"(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)"
_PLAIN = rf"(?:{_INT}(?:\.\d+)?|\.\d+)"
_SIGN = r"(?:(?<![\w)\]}])-)?"
_NUMBER_RE = re.compile(
    rf"(?<![\d.])(?P<num>"
    rf"{_SIGN}\d+\s+\d+\s*/\s*\d+(?![\d.])"  # mixed number 1 1/2 (validated as proper below)
    rf"|{_SIGN}{_PLAIN}\s*/\s*{_PLAIN}(?![\d])"  # fraction 3/4
    rf"|{_SIGN}{_PLAIN}"  # plain number
    rf")"
)
_HASH_RE = re.compile(r"(?<!#)####(?!#)")
# "#### Step 2: 16 - 3 = 13" is a markdown heading, not an answer line (Qwen writes headings).
_HEADING_RE = re.compile(r"\s*[A-Za-z]")
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=|would\s+be|will\s+be)\s*:?\s*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
_LATEX_WRAPPERS = ("text", "textbf", "mathrm", "mathbf", "textit", "mbox", "operatorname")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] == '{', and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None  # unbalanced: the reply was cut off


def _replace_frac(text: str) -> str:
    r"""`\frac{a}{b}` / `\dfrac` / `\tfrac` → `a/b` (parenthesised when not simple); `3\frac12` → `3 1/2`."""
    out: list[str] = []
    i = 0
    pattern = re.compile(r"\\[dt]?frac\s*")
    while True:
        m = pattern.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        j = m.end()
        parts: list[str] = []
        for _ in range(2):
            group = _braced(text, j)
            if group is not None:
                parts.append(_replace_frac(group[0]).strip())
                j = group[1]
            elif j < len(text) and text[j].isalnum():  # \frac12 is legal LaTeX: one token each
                parts.append(text[j])
                j += 1
            else:
                break
        if len(parts) != 2:
            out.append(text[m.start() : j])
            i = j
            continue
        num, den = parts
        simple = r"-?\d+(?:/\d+)?|-?\d+\.\d+"
        if re.fullmatch(simple, num) and re.fullmatch(simple, den) and "/" in num + den:
            # A nested fraction of plain numbers, \frac{\frac{1}{2}}{3}: evaluate it exactly.
            value = Fraction(num) / Fraction(den) if Fraction(den) != 0 else None
            if value is not None:
                num, den = str(value.numerator), str(value.denominator)
        num, den = (p if re.fullmatch(r"-?[\d.]+", p) else f"({p})" for p in (num, den))
        # A mixed number written 3\frac{1}{2} needs a space so it reads as "3 1/2", not "31/2".
        if out and out[-1][-1:].isdigit():
            out.append(" ")
        out.append(f"{num}/{den}")
        i = j
    return "".join(out)


def clean_latex(text: str) -> str:
    """Strip the LaTeX and markdown that wrap answers, keeping the numbers readable by `_NUMBER_RE`."""
    for name in _LATEX_WRAPPERS:
        text = re.sub(rf"\\{name}\s*\{{([^{{}}]*)\}}", r" \1", text)
    text = _replace_frac(text)
    text = text.replace("{,}", ",").replace("\\,", "").replace("\\!", "").replace("\\ ", " ")
    text = text.replace("\\$", "$").replace("\\%", "%").replace("\\left", "").replace("\\right", "")
    text = re.sub(r"\\(?:times|cdot)", " * ", text).replace("\u2212", "-")  # U+2212 is a minus sign
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text)
    text = text.replace("\\(", " ").replace("\\)", " ").replace("\\[", " ").replace("\\]", " ")
    return text


def _numbers(text: str) -> list[str]:
    """Number tokens of a text, in order, cleaned: "1,234" → "1234", "3 / 4" → "3/4"."""
    found: list[str] = []
    for m in _NUMBER_RE.finditer(text):
        token = re.sub(r"\s*/\s*", "/", m.group("num").replace(",", ""))
        token = re.sub(r"\s+", " ", token)
        if " " in token:  # a mixed number must be whole + proper fraction, else it is two numbers
            whole, frac = token.split(" ")
            num, den = frac.split("/")
            if not (0 < int(num) < int(den)):
                found.extend([whole, frac])
                continue
        found.append(token)
    return found


def _hash_candidate(text: str) -> str | None:
    """The last number of the last `####` line that has one (a bare `####` may put it on the next line)."""
    candidates: list[str] = []
    for m in _HASH_RE.finditer(text):
        rest = text[m.end() :]
        line, _, after = rest.partition("\n")
        line = line.split("####")[0]
        if not line.strip():
            line = after.lstrip("\n").split("\n", 1)[0].split("####")[0]
        if _HEADING_RE.match(line) and "answer" not in line.lower():
            continue
        nums = _numbers(clean_latex(line))
        if nums:
            candidates.append(nums[-1])
    return candidates[-1] if candidates else None


def _boxed_content(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` / `\\fbox{...}`."""
    last = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(?=\{)", text):
        group = _braced(text, m.end())
        if group is not None:
            last = group[0]
    return last


def _from_clause(clause: str) -> str | None:
    """The answer inside a short clause: the first number after its last '=', else its first number."""
    clause = clean_latex(clause)
    tail = clause.rsplit("=", 1)[-1]
    nums = _numbers(tail) or _numbers(clause)
    return nums[0] if nums else None


def _normalise_text(text: str) -> str:
    text = clean_latex(text).replace("$", "")
    text = re.sub(r"\s+", " ", text).strip().lower()
    return text.strip(" .,;:!\"'`()[]{}")


def extract_answer(text: str) -> str | None:
    """The final answer of a reply (see module docstring), or None when the reply holds no answer at all."""
    if not text or not text.strip():
        return None
    textual: str | None = None  # a non-numeric explicit answer, used only if nothing numeric is found

    hashed = _hash_candidate(text)
    if hashed is not None:
        return hashed
    boxed = _boxed_content(text)
    if boxed is not None:
        value = _from_clause(boxed)
        if value is not None:
            return value
        textual = _normalise_text(boxed) or None
    stated = list(_ANSWER_IS_RE.finditer(text.replace("**", "")))
    if stated:
        # Only the sentence right after "the answer is": later sentences are explanations.
        clause = re.split(r"\.(?:\s|$)", stated[-1].group("rest"))[0]
        value = _from_clause(clause)
        if value is not None:
            return value
        textual = textual or _normalise_text(clause) or None
    if textual is not None:
        return textual
    nums = _numbers(clean_latex(text))
    return nums[-1] if nums else None


def parse_number(text: str) -> Fraction | None:
    """The exact value of a text holding exactly one number ("$1,234", "12 apples", "1 1/2", "75%"), else None."""
    nums = _numbers(clean_latex(text))
    if len(nums) != 1:
        return None
    token = nums[0]
    try:
        if " " in token:
            whole, frac = token.split(" ")
            value = Fraction(frac)
            return Fraction(whole) - value if whole.startswith("-") else Fraction(whole) + value
        if "/" in token:
            num, den = token.split("/")
            if Fraction(den) == 0:
                return None
            return Fraction(num) / Fraction(den)
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def numbers_close(a: Fraction, b: Fraction, rel_tol: float = REL_TOL) -> bool:
    """Exact equality, or equal within a relative tolerance (a rounded 1/3 written as 0.3333333).

    Two whole numbers must be equal: 1000001 is not 1000000, whatever the tolerance says.
    """
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False
    return abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))


def answers_match(predicted: str | None, reference: str, rel_tol: float = REL_TOL) -> bool:
    """Whether an extracted answer equals the reference: numerically when the reference is a number."""
    if predicted is None:
        return False
    ref_value = parse_number(reference)
    if ref_value is not None:
        value = parse_number(predicted)
        return value is not None and numbers_close(value, ref_value, rel_tol)
    return _normalise_text(predicted) == _normalise_text(reference) != ""


def check_response(response: str, reference: str) -> bool:
    """Whether a whole model reply ends in the reference answer."""
    return answers_match(extract_answer(response), reference)


def format_number(value: Fraction | int) -> str:
    """Canonical answer text: "12", "-0.75" for terminating decimals, "1/3" otherwise."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole, rest = divmod(value.numerator, value.denominator)
    digits = ""
    while rest:
        rest *= 10
        d, rest = divmod(rest, value.denominator)
        digits += str(d)
    return f"{sign}{whole}.{digits}"
