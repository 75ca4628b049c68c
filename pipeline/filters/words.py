"""Word and sentence splitting shared by the quality filters.

The Gopher, C4 and FineWeb thresholds were tuned on datatrove, which splits English words with
spaCy's blank English tokenizer. Our counts must match its counts closely or the same threshold
means something else, so ``split_words`` follows the same rules, without spaCy:

1. Split on whitespace (any ``str.isspace`` character); whitespace is never a word.
2. In each chunk, repeatedly strip one *prefix* (opening punctuation, quotes, currency signs,
   symbols, ``..``) and one *suffix* (closing punctuation, quotes, ``'s``, units or currency after
   a digit, a ``.`` after a lower-case letter, digit or punctuation, or after two capitals) until
   nothing changes. ``"(Hello),"`` -> ``( Hello ) ,``; ``10km`` -> ``10 km``; ``U.S.`` stays.
3. Chunks that are exceptions are never split further: abbreviations (``Dr.``, ``e.g.``, ``Calif.``,
   single letters ``a.``), emoticons, and English contractions, which split at fixed places
   (``don't`` -> ``do n't``, ``I'm`` -> ``I 'm``, ``cannot`` -> ``can not``; also with ``’``).
4. What remains is one word if it looks like a URL or e-mail address; otherwise it is split at
   *infixes*: a hyphen, ``/``, ``:``, ``<``, ``>`` or ``=`` between letters (``well-known`` ->
   ``well - known``), a comma between letters, a ``.`` between a lower-case and an upper-case
   letter (``end.The``), an arithmetic sign between digits, and ellipses.

Chunks repeat (Zipf), so each chunk's words are cached: most chunks cost one dict lookup.
``benchmarks/filter_agreement.py`` measures the decisions this gives against datatrove's.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from itertools import chain

# Unicode's Sentence_Terminal property (Unicode 16): what spaCy's sentencizer splits after and what
# FineWeb counts as a line "ending in punctuation". Generated with the `regex` module's
# \p{Sentence_Terminal}, kept literal so nothing at run time depends on a Unicode database version.
TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965"
    "\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u1803\u1809\u1944\u1945\u1aa8\u1aa9"
    "\u1aaa\u1aab\u1b4e\u1b4f\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1b7f\u1c3b\u1c3c\u1c7e\u1c7f\u2024"
    "\u203c\u203d\u2047\u2048\u2049\u2cf9\u2cfa\u2cfb\u2e2e\u2e3c\u2e53\u2e54\u2e60\u2e61\u3002\ua4ff"
    "\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1"
    "\uabeb\ufe12\ufe15\ufe16\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55"
    "\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047"
    "\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5"
    "\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9"
    "\U000113d4\U000113d5\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb"
    "\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4"
    "\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944"
    "\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8"
    "\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016d6e"
    "\U00016d6f\U00016e98\U0001bc9f\U0001da88"
)


def _char_class(keep: Callable[[str], bool], ranges: Iterable[range]) -> str:
    """The characters ``keep`` accepts, as the inside of a regex ``[...]`` built from ranges."""
    parts, start, previous = [], None, None
    for code in (c for r in ranges for c in r):
        if keep(chr(code)):
            if start is None:
                start = code
            elif code != previous + 1:
                parts.append((start, previous))
                start = code
            previous = code
    if start is not None:
        parts.append((start, previous))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in parts)


_SCANNED = (range(0x10000), range(0x1F000, 0x1FB00))  # the BMP and the emoji planes
_LOWER = _char_class(lambda c: unicodedata.category(c) in ("Ll", "Lo"), _SCANNED)  # uncased scripts count
_UPPER = _char_class(lambda c: unicodedata.category(c) in ("Lu", "Lt", "Lo"), _SCANNED)
_ICONS = _char_class(lambda c: unicodedata.category(c) == "So", _SCANNED)
_ALPHA = _char_class(str.isalpha, _SCANNED)

_PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY_SIGNS = "$£€¥฿₽﷼₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₴₵₶₷₸₹₺₻₼₾₿"
_CURRENCY = "US\\$|C\\$|A\\$|" + "|".join(re.escape(c) for c in _CURRENCY_SIGNS)
_UNITS = "|".join(
    re.escape(unit)
    for unit in (
        "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h "
        "kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ "
        "мм мм² мм³ нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб"
    ).split()
)
_HYPHENS = "-|–|—|--|---|——|~"

_PREFIX = re.compile(
    rf"US\$|C\$|A\$|\.\.+|\+(?![0-9])|[§%=—–{re.escape(_PUNCT + _QUOTES + _CURRENCY_SIGNS)}{_ICONS}]"
)
_SUFFIX = re.compile(
    "(?:"
    + "|".join(
        [
            rf"[{re.escape(_PUNCT + _QUOTES)}—–{_ICONS}]",
            "……",
            r"\.\.+",
            "['’][sS]",
            r"(?<=[0-9])\+",
            r"(?<=°[FfCcKk])\.",
            rf"(?<=[0-9])(?:{_CURRENCY})",
            rf"(?<=[0-9])(?:{_UNITS})",
            # spaCy splices its punctuation alternation into this class, so '|', '(' and ':' are in it
            rf"(?<=[0-9{_LOWER}%²\-+{re.escape(_PUNCT + _QUOTES)}|(?:])\.",
            rf"(?<=[{_UPPER}][{_UPPER}])\.",
        ]
    )
    + ")$"
)
_INFIX = re.compile(
    "|".join(
        [
            r"\.\.+",
            "…",
            f"[{_ICONS}]",
            r"(?<=[0-9])[+\-*^](?=[0-9-])",
            rf"(?<=[{_LOWER}{re.escape(_QUOTES)}])\.(?=[{_UPPER}{re.escape(_QUOTES)}])",
            rf"(?<=[{_ALPHA}]),(?=[{_ALPHA}])",
            rf"(?<=[{_ALPHA}0-9])(?:{_HYPHENS})(?=[{_ALPHA}])",
            rf"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])",
        ]
    )
)
_DIGIT = re.compile("[0-9]")
_INFIX_CHARS = re.compile(f"[.…,:<>=/+*^~\\-–—{_ICONS}]")  # every infix holds one of these
# Kept whole: scheme://, user@, host labels and a lower-case TLD, port, path.
_URL = re.compile(
    r"(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?"
    r"(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"
    rf"[{_LOWER}]{{2,63}}(?::\d{{2,5}})?(?:[/?#]\S*)?"
)


def _exceptions() -> dict[str, tuple[str, ...]]:
    """Chunks with fixed splits: English contractions and abbreviations (spaCy's English exceptions)."""
    table: dict[str, tuple[str, ...]] = {}

    def add(*parts: str, bare: bool = True, capital: bool = True) -> None:
        # Written with "'"; also registered with "’" and, when ``bare``, with no apostrophe at all
        # ("dont" -> "do nt"); when ``capital``, also with the first word capitalized.
        variants = [parts, tuple(p.replace("'", "’") for p in parts)]
        if bare and any("'" in p for p in parts[1:]):
            variants.append(tuple(p.replace("'", "") for p in parts))
        for variant in variants:
            for first in {variant[0], variant[0][:1].upper() + variant[0][1:]} if capital else {variant[0]}:
                table[first + "".join(variant[1:])] = (first, *variant[1:])

    add("i", "'m")
    add("i", "'m", "a")
    for pronoun in ("i", "you", "he", "she", "it", "we", "they"):
        add(pronoun, "'ll")
        add(pronoun, "'ll", "'ve")
        add(pronoun, "'d")
        add(pronoun, "'d", "'ve")
    for pronoun in ("i", "you", "we", "they"):
        add(pronoun, "'ve")
    for pronoun in ("you", "we", "they"):
        add(pronoun, "'re")
    for pronoun in ("he", "she", "it"):
        add(pronoun, "'s")
    for word in ("who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"):
        if word not in ("these", "those"):
            add(word, "'s")
        if word not in ("that", "this"):
            add(word, "'re")
            add(word, "'ve")
        add(word, "'ll")
        add(word, "'ll", "'ve")
        add(word, "'d")
        add(word, "'d", "'ve")
    for verb in ("ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha",
                 "should", "wo", "would"):  # fmt: skip
        add(verb, "n't")
        add(verb, "n't", "'ve")
    for verb in ("could", "might", "must", "should", "would"):
        add(verb, "'ve")
    for verb in ("ai", "are", "is", "was", "were", "have", "has", "dare"):
        add(verb, "n't")
    for word in ("doin", "goin", "nothin", "nuthin", "somethin", "lovin", "havin", "ol"):
        add(word + "'")
    add("y'", "all", capital=False)
    add("how", "'d", "'y", bare=False)
    add("not", "'ve")
    add("can", "not")
    add("gon", "na")
    add("got", "ta")
    add("let", "'s", bare=False)
    add("c'm", "on", bare=False)
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            table[f"{hour}{period}"] = (str(hour), period)
    # Removed after generation, like spaCy: these are (also) ordinary words.
    for word in ("Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed", "were", "Were",
                 "Well", "well", "Whore", "whore"):  # fmt: skip
        table.pop(word, None)

    whole = (
        "'s 'S ‘s ‘S 're 'd ' '' and/or w/o ma'am Ma'am o'clock O'clock C++ 'Cause 'cause 'cos 'Cos "
        "'coz 'Coz 'cuz 'Cuz 'bout 'em 'll 'nuff "
        "a.m. p.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. "
        "Ltd. Md. Messrs. Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s. Mt. "
        "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. "
        "Ak. Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ia. Id. Ill. Ind. Kan. Kans. Ky. La. Mass. "
        "Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Okla. Ore. Pa. S.C. Tenn. Va. "
        "Wash. Wis. ä. ö. ü. "
        ":) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] ]= :( :-( :(( :-(( :((( ): )-: =( =[ "
        ":'( :') :* :-* :/ :-/ :| :-| =| =/ :> :-> ;) ;-) (; (-; ^_^ -_- ._. >.< <.< >.> o.O O.o 8) 8-) "
        "xD XD :D :-D =D :P :p :-P :-p :O :o :-O :-o <3 </3 :x :-x"
    )
    for word in whole.split() + [f"{letter}." for letter in "abcdefghijklmnopqrstuvwxyz"]:
        table[word] = (word,)
        table[word.replace("'", "’")] = (word.replace("'", "’"),)
    return table


_EXCEPTIONS = _exceptions()


def _suffix_length(string: str) -> int:
    last = string[-1]
    if last.isalpha() and last not in "sS" and not _DIGIT.search(string, max(0, len(string) - 6)):
        return 0  # a letter ends no suffix but "'s" or a unit right after a digit
    dots = len(string) - len(string.rstrip("."))
    if dots >= 2:  # an ellipsis starts left of any other suffix, so it wins
        return dots
    # Every other suffix is at most 4 characters; lookbehinds still see the text before ``pos``.
    match = _SUFFIX.search(string, max(0, len(string) - 4))
    return match.end() - match.start() if match else 0


def _split_infixes(string: str) -> list[str]:
    if not _INFIX_CHARS.search(string):
        return [string]
    words, start = [], 0
    for match in _INFIX.finditer(string):
        if match.start() == 0:  # an infix at the very start splits nothing
            continue
        if match.start() != start:
            words.append(string[start : match.start()])
        if match.end() != match.start():
            words.append(match.group())
        start = match.end()
    if start < len(string):
        words.append(string[start:])
    return words


def _split_affixes(chunk: str, exceptions: dict[str, tuple[str, ...]]) -> list[str]:
    """Rules 2-4 of the module docstring for one whitespace-free chunk."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    rest = chunk
    # Letters alone have no prefix or suffix: the loop ends there, at an exception or at no change.
    while rest and rest not in exceptions and not rest.isalpha():
        size = len(rest)
        match = _PREFIX.match(rest)
        pre = match.end() if match else 0
        if pre and rest[pre:] in exceptions:
            prefixes.append(rest[:pre])
            rest = rest[pre:]
            break
        suf = _suffix_length(rest[pre:]) if pre < size else 0
        if suf and rest[:-suf] in exceptions:
            suffixes.append(rest[-suf:])
            rest = rest[:-suf]
            break
        if not pre and not suf:
            break
        if pre:
            prefixes.append(rest[:pre])
        if suf:
            suffixes.append(rest[-suf:])
        rest = rest[pre : size - suf]
    words = prefixes
    if rest in exceptions:
        words.extend(exceptions[rest])
    elif "." in rest and _URL.fullmatch(rest):
        words.append(rest)
    elif rest:
        words.extend(_split_infixes(rest))
    words.extend(reversed(suffixes))
    return words


# Exceptions that the affix rules cut apart ("):" -> ") :", "Minn." -> "Minn ."), keyed by those
# pieces: like spaCy, pieces that meet again inside a chunk are re-joined ("(D-Minn.)" keeps "Minn.").
_REJOIN = {tuple(pieces): words for word, words in _EXCEPTIONS.items() if len(pieces := _split_affixes(word, {})) > 1}
_REJOIN_LONGEST = max(map(len, _REJOIN))
_REJOIN_STARTS = {pieces[:2] for pieces in _REJOIN}


# Shortcuts for the commonest shapes, which give what the rules give: "word," "said." "(word" "“Word".
_CLOSERS = frozenset(",:;?!)]}\"”’'")  # each is a one-character suffix after a letter
_OPENERS = frozenset("(\"“‘['")  # each is a one-character prefix


def _split_chunk(chunk: str) -> tuple[str, ...]:
    if chunk in _EXCEPTIONS:
        return _EXCEPTIONS[chunk]
    if chunk.isalpha():  # no rule splits letters alone
        return (chunk,)
    first, word, last = chunk[0], chunk[:-1], chunk[-1]
    if (last in _CLOSERS or (last == "." and word[-1:].islower())) and word.isalpha():
        if word not in _EXCEPTIONS and (word, last) not in _REJOIN_STARTS:
            return (word, last)
    elif first in _OPENERS and chunk[1:].isalpha():
        if chunk[1:] not in _EXCEPTIONS and (first, chunk[1:]) not in _REJOIN_STARTS:
            return (first, chunk[1:])
    words = _split_affixes(chunk, _EXCEPTIONS)
    if not any(pair in _REJOIN_STARTS for pair in zip(words, words[1:])):
        return tuple(words)
    joined: list[str] = []
    i = 0
    while i < len(words):
        for length in range(min(_REJOIN_LONGEST, len(words) - i), 1, -1):
            exception = _REJOIN.get(tuple(words[i : i + length]))
            if exception is not None:
                joined.extend(exception)
                i += length
                break
        else:
            joined.append(words[i])
            i += 1
    return tuple(joined)


_CACHE: dict[str, tuple[str, ...]] = {}
_CACHE_LIMIT = 500_000


def split_words(text: str) -> list[str]:
    """The words of ``text`` (punctuation marks count as words, as in datatrove)."""
    if len(_CACHE) > _CACHE_LIMIT:
        _CACHE.clear()
    chunks = text.split()
    # Set and dict operations run in C: only chunks never seen before cost Python-level work,
    # and the commonest of those, a run of letters not listed as an exception, is one word.
    new = set(chunks).difference(_CACHE)
    if new:
        letters = {chunk for chunk in new if chunk.isalpha()}.difference(_EXCEPTIONS)
        _CACHE.update(zip(letters, zip(letters)))
        for chunk in new.difference(letters):
            _CACHE[chunk] = _split_chunk(chunk)
    return list(chain.from_iterable(map(_CACHE.__getitem__, chunks)))


def clear_cache() -> None:
    """Forget cached chunk splits (benchmarks call this so every timed pass starts cold)."""
    _CACHE.clear()


def is_punctuation(word: str) -> bool:
    """Every character is Unicode punctuation (category P*), spaCy's ``is_punct``."""
    return all(unicodedata.category(c)[0] == "P" for c in word)


def count_sentences(text: str, stop_at: int | None = None) -> int:
    """Sentences in ``text`` by spaCy's rule-based sentencizer (what datatrove's C4 filter counts).

    A new sentence starts at the first word that is not punctuation after a word that is a sentence
    terminal (``.``, ``!``, ``?`` and the other Sentence_Terminal characters). ``stop_at`` ends the
    count early once it is reached, for callers that only compare against a minimum.
    """
    words = split_words(text)
    count, after_terminal = min(len(words), 1), False
    for word in words:
        if stop_at is not None and count >= stop_at:
            break
        if word in TERMINAL_PUNCTUATION:
            after_terminal = True
        elif after_terminal and not is_punctuation(word):
            count += 1
            after_terminal = False
    return count
