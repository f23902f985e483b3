"""Builds, from documents only, a training set that teaches the bundled chat model its one job.

The job: answer briefly from numbered passages, copy the fact rather than paraphrase it, cite the
passage like [1], and say the documents don't say when no passage holds the answer. Each example
is the prompt privatellm sends at run time (`prompts.build_messages` over the passages retrieval
found) and the reply wanted: the sentence that answers, copied, cited; or a refusal.

Questions are made from document sentences by rule, no language model: a year, a date, a count, an
amount, a name or a 《title》 of a sentence becomes the question word, so the answer is a span of
that sentence by construction. Dev-set documents are split in two halves by a hash of their path
and only the training half is read, so the other half stays unseen for a held-out comparison; the
dev questions (qa.jsonl) are never opened. The repository's sample documents (ingest/) are used too.

    .venv/bin/python scripts/build_cited_set.py --data-dir ~/.cache/privatellm-eval \\
        --collection dev --docs ../shared/eval/dev/docs --out /tmp/cited/train.jsonl --n 1500

The output holds dev-document text: it is written outside the repository and never committed;
this script, seeded, rebuilds it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from privatellm.text import is_cjk, sentence_spans

if TYPE_CHECKING:
    from privatellm.engines import Engine
    from privatellm.service import Service
    from privatellm.types import Chunk, ScoredChunk

Lang = Literal["en", "zh"]
Kind = Literal["answer", "decline"]
Target = Literal["sentence", "span"]
LANGS: tuple[Lang, ...] = ("en", "zh")
KINDS: tuple[Kind, ...] = ("answer", "decline")

DECLINE: dict[Lang, str] = {"en": "The documents don't say.", "zh": "文档中没有提到。"}
DECLINE_SHARE = 0.15
ENGLISH_SHARE = 0.45  # of each kind; the users ask in both languages
# The source chunk must be among the first SEARCH_DEPTH hits from readable documents. The
# search itself goes deeper, so that after the unread half's hits (and, for a refusal, the
# question's own document) are left out the prompt still gets top_k passages, as at run time.
SEARCH_DEPTH, DEEP_SEARCH = 10, 30
MAX_POSITION = 3  # the source passage goes in at [1]..[3], each as often
# At most 3 examples per document, 3 more per further 15 chunks up to 24: the training half holds
# 81 English documents against 456 Chinese ones, but the English ones are long (10-K filings,
# papers, whole Wikipedia articles), and ~45% of the set must be English.
PER_DOC, CHUNKS_PER_SHARE, MAX_PER_DOC = 3, 15, 24
TRIES_PER_TURN = 4  # candidates a document may spend per round before the next document's turn
MAX_MISSES = 24  # candidates in a row that gave nothing: the document is given up
MAX_WORDS, MAX_HAN = 45, 90  # longest target sentence: English words, Chinese characters
MAX_QUESTION_WORDS = 32  # users ask in ~10 words; a question is its sentence less the answer
SAMPLES_COLLECTION = "cited-samples"


# -- which documents may be read ----------------------------------------------------------------


def in_training_half(relative: str) -> bool:
    """Returns whether the document at this path (relative to the docs folder, posix) belongs to
    the training half: sha1 of the path, as an integer, is even."""
    return int(hashlib.sha1(relative.encode("utf-8")).hexdigest(), 16) % 2 == 0


def flat(text: str) -> str:
    """Returns text with every run of white space made one space, as the prompt shows it."""
    return " ".join(text.split())


# -- questions from sentences -------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    text: str
    span: str  # the words of the source sentence that answer it
    lang: Lang


_NUMBERED = re.compile(r"^(?:\(?\d{1,2}[.)、．]|[（(]\d{1,2}[）)]|[一二三四五六七八九十]、)\s*")


def _words(text: str) -> frozenset[str]:
    """Returns the set of text's words (a word list written as one string)."""
    return frozenset(text.split())


_PRONOUNS = _words(
    "it he she they this these those that its his her their we our i you there such them him "
    "one here"
)
_AUX = _words("is are was were has have had will would can could should might must did does do")
# Words that go lower-case when the subject moves behind the auxiliary.
_LOWERED = _words("the a an this that these those its their his her our some many most")
_LEADING_EN = re.compile(
    r"^(?:However|Moreover|Furthermore|Additionally|In addition|Also|Thus|Therefore|Meanwhile|"
    r"Consequently|As a result|Nevertheless|Instead|Subsequently|Finally|Then|Later),\s+"
)
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_YEAR = r"(?:1[0-9]{3}|20[0-9]{2})"
_DATE = re.compile(
    r"\b(?P<prep>(?i:in|on|since|until|during|by|before|after))\s+(?P<when>"
    rf"(?P<month>(?:{_MONTHS})\s+(?:\d{{1,2}},\s+)?|\d{{1,2}}\s+(?:{_MONTHS})\s+)?{_YEAR})"
    r"(?![\d%\w/]|[.,]\d|\s*[-–]\s*\d|,?\s+(?:and|or)\s+\d)"
)
_COUNT = re.compile(
    r"(?<![\w$.,-])(?P<num>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
    r"(?:\s+(?:thousand|million|billion|hundred))?\s+"
    r"(?P<unit>people|children|men|women|feet|[a-z]{2,}s)\b"
)
# Words ending in s that are not plural nouns, or not units one counts in.
_NOT_UNITS = _words(
    """this thus always perhaps whereas across unless plus less does was has its his hers ours
    yours theirs towards afterwards besides sometimes nevertheless news means"""
)
_PERCENT = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:%|percent\b|per cent\b)")
_MONEY = re.compile(
    r"(?<![\w])\$\s?\d[\d,]*(?:\.\d+)?(?:\s+(?:thousand|million|billion|trillion))?(?!\d|,\d)"
)
_NAME = re.compile(r"(?<![\w'’-])[A-Z][a-zA-Z'’.-]+(?:\s+(?:of\s+|de\s+)?[A-Z][a-zA-Z'’.-]+)+")
_NOT_PERSON = _words(
    """University College School Company Corporation Inc Inc. Ltd Group Bank Party Church Museum
    River Mountain Mountains Lake Island Islands Sea Ocean City County State States Kingdom
    Republic Empire Act War Award Awards Prize Cup League Championship Games Olympics Association
    Council Committee Court Department Ministry Institute Society Foundation Center Centre Hall
    Park Street Road Station Airport Bridge Tower Building Square Hospital Agreement Treaty Army
    Navy Force Movement Revolution Records Festival Series System Union Airlines Motors
    Technologies Systems Holdings Capital North South East West Coast Valley Desert Bay Gulf
    Province Region District Europe America Asia Africa Day Dynasty Temple Cathedral Palace Castle
    Theatre Theater Opera Orchestra Band Club Team Stadium Arena Street Avenue Report Form Item
    Note Notes Table Section Services Products Plan Program Programme Fund Trust Index Model"""
)
_CLAUSE_BREAK = re.compile(
    r"[,;:()]|\b(?i:and|but|or|while|when|where|after|before|because|which|who|whose|that|"
    r"although|though|since|until|as|if)\b"
)
# Something that is likely a verb: an auxiliary, a past tense, a present tense in -s.
_VERB = re.compile(
    r"\b(?:is|are|was|were|has|have|had|will|would|can|could|did|does|do|[a-z]{2,}ed|[a-z]{3,}s)\b"
)
# A number next to another one, in a list or a range.
_LISTED_BEFORE = re.compile(
    r"\d[\d.,%]*\s*(?:thousand|million|billion)?\s*(?:,\s*(?:and|or)?|and|or|[-–])\s*$"
)
_LISTED_AFTER = re.compile(r"\s*(?:,|and|or|[-–])\s*\$?\d")
_TAIL = re.compile(
    r",\s+(?:which|who|whose|where|while|whereas|but|although|though|and|as|along|including|"
    r"making|with|\w+ing)\b|;\s"
)
_FIRST_PERSON = re.compile(r"\b(?:we|our|ours|us|you|your)\b")
_GLUED = re.compile(r"[.!?][\"”’)]\s+[A-Z]|[.,]:\d|:\d+[–-]\d+")
# An abbreviation the splitter took for a sentence end: "the U.S.", "Dou (d. 97 AD)", "Pte. Ltd.".
_ABBREVIATION = re.compile(
    r"^\(?(?:(?:[A-Z]\.)+|[a-z]\.|(?:Mr|Mrs|Ms|Dr|St|Co|Jr|Sr|No|vs|Inc|Ltd|Corp|Pte|Bhd|ca|fl)\.)$"
)
_AFTER_NAME = _words(
    """of in on at for to from with by as was were is are has had have when where after before
    since during until"""
)
# Verbs after which "in X" or "at X" says where.
_PLACED = _words(
    """born located based headquartered held built situated lives lived died buried settled
    founded opened stationed published filmed recorded played studied educated"""
)
_BEFORE_NAME = _words(
    """the by of in at from to with for on as under against between about into during near
    is was were are became become include includes including"""
)
_WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_BY_PERCENT = _words("increased decreased rose fell grew declined dropped up down")


def english_sentence_ok(sentence: str) -> bool:
    """Returns whether a sentence can become a question: a whole statement that names its subject,
    not too long, mostly words (not a table row)."""
    words = sentence.split()
    if not 6 <= len(words) <= MAX_WORDS or not sentence.endswith("."):
        return False
    if sentence.endswith(("..", "…")) or sentence.count('"') % 2:  # cut off, or a quote is
        return False
    if not sentence[0].isupper() or words[0].lower().strip(",") in _PRONOUNS:
        return False
    if _ABBREVIATION.match(words[-1]):  # "Frank Shuman, a U.S." : cut short by the splitter
        return False
    if "[" in sentence or "]" in sentence:  # "[citation needed]" would read as a citation
        return False
    if _GLUED.search(sentence):  # two sentences the splitter missed, or a page reference
        return False
    visible = [c for c in sentence if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    capitalised = sum(w[0].isupper() for w in words[1:])
    if sentence.count("(") != sentence.count(")"):
        return False
    # Headings and tables: mostly capitals or few letters.
    return (
        letters >= 0.65 * len(visible) and capitalised <= 0.5 * len(words) and "?" not in sentence
    )


def english_questions(sentence: str) -> list[Question]:
    """Returns the questions a sentence answers, one per fact found in it (a date, a count, an
    amount, a share, a name); each span is text of the sentence the question leaves out."""
    unnumbered = _NUMBERED.sub("", sentence)
    if not english_sentence_ok(unnumbered):
        return []
    body = _LEADING_EN.sub("", unnumbered).rstrip(".")
    body = body[0].upper() + body[1:]
    if body.split()[0].lower() in _PRONOUNS:
        return []
    # Names only where the sentence holds no date or number: those questions read better.
    found = [*_date_questions(body), *_count_questions(body)]
    found = [q for q in found if _reads_as_question(q)]
    return found or [q for q in _name_questions(body) if _reads_as_question(q)]


def _reads_as_question(question: Question) -> bool:
    """Returns whether a question is one a user could ask: not too short or long, without its
    answer, and without "we" or "our" (a filing's or a paper's own voice: who is meant?)."""
    words = question.text.split()
    if _FIRST_PERSON.search(question.text):
        return False
    return 5 <= len(words) <= MAX_QUESTION_WORDS and question.span not in question.text


def _date_questions(body: str) -> Iterator[Question]:
    for m in _DATE.finditer(body):
        prep = m["prep"].lower()
        has_day = m["month"] is not None and any(c.isdigit() for c in m["month"])
        if m["month"] is None:
            fronted = in_situ = f"{prep} what year"
        else:
            fronted = "when" if prep in ("in", "on") else f"{prep} what date"
            in_situ = f"{prep} what date" if has_day else f"{prep} what month"
        rest = _without(body, m.start(), m.end())
        # Fronted only from the first clause: later ones have verbs of their own.
        front = not _CLAUSE_BREAK.search(body[: m.start()])
        text = (front and _fronted(fronted, rest)) or _in_situ(
            body, m.start(), m.end(), in_situ, True
        )
        if text:
            yield Question(text, m["when"], "en")


def _count_questions(body: str) -> Iterator[Question]:
    asked: list[tuple[re.Match[str], str]] = []
    for m in _COUNT.finditer(body):
        number = m["num"].replace(",", "")
        is_year = len(number) == 4 and number.isdigit() and 1500 <= int(number) <= 2099
        if m["unit"] in _NOT_UNITS or m["unit"].endswith(("ss", "us", "is")) or is_year:
            continue
        asked.append((m, f"how many {m['unit']}"))
    for m in _PERCENT.finditer(body):
        before = body[: m.start()].split()
        by = before and before[-1] in _BY_PERCENT
        asked.append((m, "by what percentage" if by else "what percentage"))
    for m in _MONEY.finditer(body):
        before = body[: m.start()].split()
        to = before and before[-1] in ("to", "of", "at", "from")
        asked.append((m, "what amount" if to else "how much"))
    for m, wh in asked:
        if _LISTED_BEFORE.search(body[: m.start()]) or _LISTED_AFTER.match(body[m.end() :]):
            continue  # one of several ("$11.5 billion, $16.2 billion and ..."): which one?
        text = _in_situ(body, m.start(), m.end(), wh)
        if text:
            yield Question(text, m.group(), "en")


def _name_questions(body: str) -> Iterator[Question]:
    for m in _NAME.finditer(body):
        if not _lone_name(body, m):
            continue
        words = m.group().split()
        start, before = m.start(), body[: m.start()].split()
        previous = before[-1].lower() if before else ""
        titled = previous == "the"  # "the Republican Party": not a person; "the" goes too
        if titled:
            start -= len("the ")
            previous = before[-2].lower() if len(before) > 1 else ""
            if previous in ("and", "or", "nor"):  # one item of a list
                continue
        person = len(words) <= 3 and not set(words) & _NOT_PERSON and not titled
        placed = len(before) > 1 and before[-2].lower() in _PLACED
        if previous in ("in", "at") and not titled and placed:  # "was born in Rome"
            start -= len(previous) + 1
            wh = "where"
        elif person and previous in ("by", "with", "to", "for", "from"):
            wh = "whom"  # anywhere else a capitalised pair is as often a thing as a person
        else:
            wh = "what"
        text = _in_situ(body, start, m.end(), wh)
        if text:
            yield Question(text, m.group(), "en")


def _lone_name(body: str, m: re.Match[str]) -> bool:
    """Returns whether a run of capitalised words is a name standing alone: not the sentence's
    first words, not a title in quotes, not one item of a list or an apposition, not a date."""
    words = m.group().split()
    if any(w.endswith(".") and len(w) > 2 for w in words[:-1]):
        return False  # "the U.S. Growth": a sentence end inside, not a name
    if m.start() == 0 or words[0] == "The" or set(words) & (_WEEKDAYS | set(_MONTHS.split("|"))):
        return False
    before, after = body[: m.start()], body[m.end() :]
    if not before.endswith(" ") or before.rstrip().endswith((",", '"', "“", "(")):
        return False
    if after.startswith(("'", "’", '"', "”", "/")) or re.match(r",\s+(?:the\s+)?[A-Z]", after):
        return False
    if m.group().endswith(("'", "’", "'s", "’s")) or before.split()[-1][-1].isdigit():
        return False  # a possessive, or part of a longer name ("the 1945 World Series")
    head = [w for w in before.split() if w not in ("the", "of", "for")]
    if len(head) > 1 and head[-1][0].isupper() and len(head) < len(before.split()):
        return False  # the end of a longer name ("the Organization of the Black Sea ...")
    tail = after.split()[:3]
    links = next((i for i, w in enumerate(tail) if w not in ("of", "the", "in", "de")), len(tail))
    if 0 < links < len(tail) and tail[links][0].isupper():
        return False  # the start of a longer name ("The Rime of the Ancient Mariner")
    following = after.split()[0].lower() if after.split() else ""
    previous = before.split()[-1]
    # A name next to a noun is part of a longer phrase ("the NL East lead", "the engineer
    # Gustave Eiffel"): only these words may stand before and after it.
    return (previous in _BEFORE_NAME or previous.endswith("ed")) and (
        not following or following.strip(",.;:()") in _AFTER_NAME or following[0] in ",;:("
    )


def _without(body: str, start: int, end: int) -> str:
    """Returns body with body[start:end] taken out, the commas that set it off with it."""
    before, after = body[:start].rstrip(), body[end:].lstrip()
    if not before:
        return after.removeprefix(",").strip(" ,;:")
    if before.endswith(",") and (after.startswith(",") or not after):
        before = before[:-1]
    joined = before + after if after.startswith((",", ";", ":", ".")) else f"{before} {after}"
    return joined.strip(" ,;:")


def _fronted(wh: str, clause: str) -> str | None:
    """Returns 'WH AUX SUBJECT REST?' made from 'SUBJECT AUX REST', or None when the clause does
    not start with a short subject (no verb, no comma in it) followed by an auxiliary."""
    words = clause.split()
    for i, word in enumerate(words[:5]):
        if i and word in _AUX and i + 1 < len(words):
            subject = words[:i]
            verbish = any(w.islower() and w.endswith(("ed", "ing")) for w in subject)
            if verbish or any(w[-1] in ",;:()" or w in ("which", "who", "that") for w in subject):
                return None
            if subject[0].lower() in _PRONOUNS:
                return None
            # "The treaty was" -> "was the treaty"; "Surveying techniques were" -> "were
            # surveying techniques": a capital followed by a small letter starts a sentence only.
            common = len(subject) > 1 and subject[1][0].islower()
            lowered = subject[0].lower() in _LOWERED or common
            first = subject[0].lower() if lowered else subject[0]
            asked = " ".join([wh, word, first, *subject[1:]])
            return _finished(f"{asked}\0 {' '.join(words[i + 1 :])}")
    return None


def _in_situ(body: str, start: int, end: int, wh: str, movable: bool = False) -> str | None:
    """Returns body with body[start:end] replaced by wh, as a question, or None when it would
    ask about a pronoun or inside brackets. A wh-phrase that would open the question before a
    comma, or a movable one (a time), goes behind the main clause instead ("In 1998, X did Y,
    Z." -> "X did Y in what year?"); a word already in the sentence as the wh-word would read
    twice."""
    if not _balanced(body[:start]):
        return None
    asks = [w for w in wh.split() if w in ("what", "who", "whom", "where", "when", "how")]
    if asks and re.search(rf"\b{asks[0]}\b", body, re.I):
        return None
    if not body[:start].strip() and (movable or body[end:].lstrip().startswith(",")):
        rest = _without(body, start, end)
        tail = _TAIL.search(rest)
        rest = rest[: tail.start()] if tail else rest
        if not rest or rest.split()[0].lower() in _PRONOUNS:
            return None
        return _finished(f"{rest} {wh}")
    return _finished(f"{body[:start]}{wh}\0{body[end:]}")


def _finished(text: str) -> str:
    """Returns text as a question: one line, capitalised, ending in a question mark, and cut
    before a clause that follows the question word ("\0" marks where that is) and only adds to
    the sentence (", which ...", ", including ...", "; ...")."""
    head, _, tail = text.partition("\0")
    extra = _TAIL.search(tail)
    if extra and _VERB.search(head + tail[: extra.start()]):  # not "Al Gore in what year?"
        tail = tail[: extra.start()]
    text = flat(head + tail).rstrip(" ,;:.")
    return f"{text[0].upper()}{text[1:]}?"


# -- Chinese ------------------------------------------------------------------------------------

_ZH_START = re.compile(r"^(?:此外|另外|同时|因此|所以|但是|然而|而且|并且|其中)，")
# Sentences that lean on the one before: a pronoun or a connective first.
_ZH_PRONOUN = re.compile(
    r"^(?:他|她|它|其|该|此|这|那|本|我|你|之|但|而|并|且|也|又|后|则|所以|因为|因此|不过|与|和|同|由于|虽然|如果|即使|因|另外|此外|同时)"
)
_ZH_FULL_DATE = re.compile(r"\d{4}年\d{1,2}月(?:\d{1,2}[日号])?(?!\d)")
_ZH_HE = re.compile(r"[他她它]")
_ZH_PREPOSITION = re.compile(r"^(?:在|于|从|自|当|经|据|随着|为了|对|截至|到)")
_ZH_WHEN = re.compile(r"\d|[年月日时期间初末后前]$|赛季|世纪")
_ZH_YEAR = re.compile(r"(?<!\d)\d{4}年(?![\d代间初末底中])")
_ZH_UNITS = (
    "比特|字节|平方公里|平方千米|平方米|公里|千米|公顷|公斤|千克|美元|港元|英镑|欧元|小时|分钟|"
    "个|人|名|座|所|种|次|件|家|位|部|本|首|条|项|届|集|层|间|米|亩|吨|元|岁|年|天|秒|场|支|"
    "架|艘|辆|颗|株|只|头|匹|卷|册|章|节|门|枚|倍|类|步|页|段"
)
_ZH_COUNT = re.compile(
    rf"(?<![\d.,第—–~～－-])(?P<num>\d{{1,3}}(?:,\d{{3}})+|\d+(?:\.\d+)?)(?P<scale>万|亿|千|百)?(?P<more>多|余)?\s?(?P<unit>{_ZH_UNITS})(?![\d栏])"
)
# Not 第一: "the first" is as often praise as a rank.
_ZH_ORDINAL = re.compile(
    rf"第(?P<num>\d+|[二三四五六七八九十][一二三四五六七八九十]*)(?P<unit>{_ZH_UNITS})"
)
_ZH_PERCENT = re.compile(r"(?<![\d.])\d+(?:\.\d+)?[%％]")
_ZH_TITLE = re.compile(
    r"(?P<kind>电影|小说|作品|电视剧|动画|漫画|游戏|专辑|歌曲|单曲|书|杂志|诗)?《[^》]+》"
)
# Chinese numerals with a measure word; 一 alone is mostly "a" ("是一个游戏").
_ZH_NUMERAL = re.compile(
    r"(?<![第一二三四五六七八九十百千万两几数])(?P<num>[两二三四五六七八九十][十百千万]?[一二三四五六七八九]?)"
    r"(?P<unit>个|种|座|所|次|件|家|位|部|本|首|条|项|届|集|层|名|场|支|架|艘|辆|颗|枚|倍|天|岁|类)"
)
_ZH_MAKER = re.compile(
    r"由(?P<who>[^，。；由的在于\d]{2,15}?)(?:开发|创立|创办|执导|导演|主演|出版|发行|设计|编剧|作曲|"
    r"作词|演唱|建造|主持|制作|领导|率领|编写|撰写|翻译|创作|发明|发现|提出|组建)"
)
_ZH_PLACE = re.compile(
    r"(?:位于|坐落于|出生于|生于|总部设于|总部位于)(?P<place>[^，。；\d的被]{2,20})(?=[，；]|$)"
)
_ZH_NAMED = re.compile(
    r"(?:被称为|称为|简称|又称|又名|原名|别名|俗称|名为|译为|意为|意思是|命名为|改名为|更名为)"
    r"(?!是)(?P<name>[^，。；、（）\d]{2,15})(?=[，；]|$)"
)
_ZH_DEFINITION = re.compile(
    r"^(?P<subject>[^，。；：、（）()《》“”「」的这那其他她它也被都就还\d]{2,12}?)(?<![也就都还不则即并亦又])是"
    r"(?!由|在|从|于|因|否|为了)(?P<what>[^，][^，]{3,}?)(?<!的)(?:，|$)"
)
# What a 《title》 names, by how it ends: a law, a paper or form, a newspaper, a magazine.
_ZH_TITLE_ENDS = [
    ("法》", "哪部法律"),
    *(
        (f"{e}》", "哪份文件")
        for e in _words("规定 办法 标准 表 书 通知 条例 意见 细则 章程 方案 计划 协议 简章 公告")
    ),
    ("报》", "哪份报纸"),
    *((f"{e}》", "哪本杂志") for e in ("杂志", "周刊", "月刊")),
]
_ZH_MEASURE = {
    "游戏": "款",
    "专辑": "张",
    "歌曲": "首",
    "单曲": "首",
    "诗": "首",
    "书": "本",
    "杂志": "本",
}


def chinese_sentence_ok(sentence: str) -> bool:
    """Returns whether a Chinese sentence can become a question: a whole statement, mostly
    Chinese, that names its subject, at most MAX_HAN characters."""
    # A piece ending in ； is half a sentence (sentence_spans cuts there too).
    if not 12 <= len(sentence) <= MAX_HAN or not sentence.endswith("。"):
        return False
    if _ZH_PRONOUN.match(_ZH_START.sub("", sentence)):
        return False
    return is_cjk(sentence, 0.6)


def chinese_questions(sentence: str) -> list[Question]:
    """Returns the questions a Chinese sentence answers, one per fact found in it (a date, a
    year, a count, an ordinal, a share, a 《title》, who made it, where it is, what it is)."""
    if not chinese_sentence_ok(sentence):
        return []
    body = _ZH_START.sub("", _NUMBERED.sub("", sentence)).rstrip("。")
    spans = [*_zh_time_spans(body), *_zh_count_spans(body), *_zh_title_spans(body)]
    spans += [(m.start("who"), m.end("who"), "谁") for m in _ZH_MAKER.finditer(body)]
    spans += [(m.start("place"), m.end("place"), "哪里") for m in _ZH_PLACE.finditer(body)]
    spans += [(m.start("name"), m.end("name"), "什么") for m in _ZH_NAMED.finditer(body)]
    questions = []
    for start, end, wh in spans:
        text = _zh_question(body, start, end, wh)
        if not text or _ZH_HE.search(text.split("，")[0]):
            continue  # "哪一年他与妻子成立了……": who is he?
        if len(text) - len(wh) >= 7 and body[start:end] not in text:
            questions.append(Question(text, body[start:end], "zh"))
    defined = _ZH_DEFINITION.match(body)
    if defined:  # "漠河机场是中国……的机场" -> "漠河机场是什么？"
        questions.append(Question(f"{defined['subject']}是什么？", defined["what"], "zh"))
    return questions


def _zh_time_spans(body: str) -> list[tuple[int, int, str]]:
    dates = [(m.start(), m.end(), "什么时候") for m in _ZH_FULL_DATE.finditer(body)]
    years = [(m.start(), m.end(), "哪一年") for m in _ZH_YEAR.finditer(body)]
    return dates + [y for y in years if not any(s <= y[0] and y[1] <= e for s, e, _ in dates)]


def _zh_count_spans(body: str) -> list[tuple[int, int, str]]:
    spans = []
    for m in _ZH_COUNT.finditer(body):
        if m["unit"] == "年" and len(m["num"]) == 4:
            continue  # a year, asked above
        spans.append((m.start(), m.end(), f"多少{m['scale'] or ''}{m['unit']}"))
    for m in _ZH_NUMERAL.finditer(body):
        few = len(m["num"]) == 1 and m["num"] != "十"
        spans.append((m.start(), m.end(), f"{'几' if few else '多少'}{m['unit']}"))
    spans += [(m.start(), m.end(), f"第几{m['unit']}") for m in _ZH_ORDINAL.finditer(body)]
    return spans + [(m.start(), m.end(), "百分之多少") for m in _ZH_PERCENT.finditer(body)]


def _zh_title_spans(body: str) -> list[tuple[int, int, str]]:
    spans = []
    for m in _ZH_TITLE.finditer(body):
        kind = m["kind"]
        if m.start() == 0 and not body[m.end() :].startswith(("是", "为", "由")):
            continue  # "《X》这张碟..." does not become "哪部作品这张碟..."
        if kind:
            wh = f"哪{_ZH_MEASURE.get(kind, '部')}{kind}"
        else:
            wh = next((w for end, w in _ZH_TITLE_ENDS if m.group().endswith(end)), "哪部作品")
        spans.append((m.start(), m.end(), wh))
    return spans


def _inside(m: re.Match[str], spans: Sequence[tuple[int, int, str]]) -> bool:
    return any(s <= m.start() and m.end() <= e for s, e, _ in spans)


def _zh_question(body: str, start: int, end: int, wh: str) -> str | None:
    """Returns body with body[start:end] replaced by wh, cut to the clause holding it and the
    first clause (the subject), ending in ？."""
    if not _balanced(body[:start]):
        return None  # inside brackets: "人口78,191人（2008年）" asks nothing by itself
    asked = f"{body[:start]}\0{body[end:]}"
    asked = asked.replace("（）", "").replace("()", "")
    clauses = asked.split("，")
    at = next(i for i, c in enumerate(clauses) if "\0" in c)
    # The first clause names the subject, unless it only says when or where ("2001赛季，",
    # "在8天的比赛日中，"): then the next one does.
    situating = _ZH_WHEN.search(clauses[0]) or _ZH_PREPOSITION.match(clauses[0])
    lead = 2 if situating else 1
    last = max(at, lead - 1)  # through the clause that names the subject
    short = len("".join(clauses[: last + 1])) <= 40
    kept = clauses[: last + 1] if last < lead or short else [*clauses[:lead], clauses[at]]
    text = "，".join(kept)
    if not _balanced(text):
        text = asked
    text = text.replace("\0", wh).strip("，、：: ")
    return f"{text}？" if text else None


def _balanced(text: str) -> bool:
    pairs = (("（", "）"), ("《", "》"), ("“", "”"), ("(", ")"), ("「", "」"))
    return all(text.count(a) == text.count(b) for a, b in pairs)


def make_questions(sentence: str) -> list[Question]:
    """Returns the questions a sentence answers (none when it states no fact we can ask for)."""
    sentence = flat(sentence)
    if not sentence:
        return []
    return chinese_questions(sentence) if is_cjk(sentence) else english_questions(sentence)


# -- targets and checks -------------------------------------------------------------------------

_END = re.compile(r"[.。；;!！?？]+$")


def cited(sentence: str, n: int) -> str:
    """Returns the sentence, copied, with [n] before its closing punctuation: where the answer's
    own renderer puts markers, and where the citation parser finds them (a marker after the
    full stop would be read as a sentence of its own and dropped)."""
    sentence = flat(sentence)
    end = _END.search(sentence)
    body, stop = (sentence[: end.start()].rstrip(), end.group()) if end else (sentence, "")
    return f"{body} [{n}]{stop}"


def span_cited(c: Candidate, n: int) -> str:
    """Returns the answer span alone, copied, with [n] and a full stop ("1932 [1].")."""
    return f"{flat(c.question.span)} [{n}]{'.' if c.question.lang == 'en' else '。'}"


def mentions(span: str, passages: Sequence[str]) -> bool:
    """Returns whether any passage holds the answer span (white space and case aside; numbers
    also without their thousands commas)."""
    forms = {flat(span).lower(), flat(span).lower().replace(",", "")}
    texts = [flat(p).lower() for p in passages]
    return any(form in text or form in text.replace(",", "") for form in forms for text in texts)


def shown_in(sentence: str, passages: Sequence[str]) -> int:
    """Returns the number (from 1) of the first passage whose shown text holds the sentence
    whole, 0 if none does."""
    wanted = flat(sentence)
    return next((i for i, p in enumerate(passages, 1) if wanted in p), 0)


def prompt_passages(content: str) -> list[str]:
    """Returns the passages' texts as a prompt built by build_messages shows them, markers cut."""
    parts = content.split("\n\n")[1:-1]
    return [re.sub(r"^\[\d+\] ", "", p) for p in parts]


def per_doc_cap(chunks: int) -> int:
    """Returns how many examples a document of this many chunks may give."""
    return min(MAX_PER_DOC, PER_DOC * max(1, math.ceil(chunks / CHUNKS_PER_SHARE)))


def quotas(n: int, decline_share: float = DECLINE_SHARE) -> dict[tuple[Kind, Lang], int]:
    """Returns how many examples of each kind and language make n."""
    declines = round(n * decline_share)
    answers = n - declines
    en_answers, en_declines = round(answers * ENGLISH_SHARE), round(declines * ENGLISH_SHARE)
    return {
        ("answer", "en"): en_answers,
        ("answer", "zh"): answers - en_answers,
        ("decline", "en"): en_declines,
        ("decline", "zh"): declines - en_declines,
    }


# -- candidates from the store ------------------------------------------------------------------


@dataclass
class Doc:
    doc_id: str
    source: str  # relative path: under the docs folder, or ingest/... for the samples
    lang: Lang
    chunks: list[Chunk]
    searcher: Searcher
    candidates: Iterator[Candidate] | None = None
    used: int = 0
    misses: int = 0  # candidates in a row that gave no example
    exhausted: bool = False


@dataclass(frozen=True)
class Candidate:
    chunk: Chunk
    sentence: str
    question: Question


_ENDINGS = (".", "!", "?", "。", "！", "？", "；", ":", "：")


def chunk_sentences(chunk: Chunk) -> list[str]:
    """Returns the chunk's whole sentences: PDF line breaks only wrap lines; a later chunk's
    first piece may start mid-sentence (chunks overlap), so it is left out."""
    spans = sentence_spans(chunk.text, wrapped=chunk.page is not None or _wrapped(chunk.text))
    if chunk.index > 0:
        spans = spans[1:]
    whole: list[tuple[int, int]] = []
    for start, end in spans:
        if whole and _unfinished(chunk.text[whole[-1][0] : whole[-1][1]]):
            whole[-1] = (whole[-1][0], end)
        else:
            whole.append((start, end))
    return [flat(chunk.text[s:e]) for s, e in whole]


def _wrapped(text: str) -> bool:
    """Returns whether text's lines are mostly long and end mid-sentence: prose wrapped at a
    fixed width (a Markdown file), whose single line breaks are not sentence ends."""
    long = [line.strip() for line in text.split("\n") if len(line.strip()) >= 50]
    cut = [line for line in long if not line.endswith(_ENDINGS)]
    return len(long) > 1 and len(cut) >= 0.3 * len(long)


def _unfinished(piece: str) -> bool:
    """Returns whether a piece the sentence splitter cut off goes on in the next one: a Chinese
    ； ends a clause, and "Alfred P." or "the U.S." an abbreviation, not the sentence."""
    words = piece.split()
    if _NUMBERED.fullmatch(piece.strip()):  # "1." before a list item
        return True
    return piece.endswith("；") or (bool(words) and bool(_ABBREVIATION.match(words[-1])))


def doc_candidates(doc: Doc, rng: random.Random) -> Iterator[Candidate]:
    """Yields the document's sentences in random order, each once with one of its questions,
    then those with more than one question once more with another (short Chinese documents
    hold few sentences that state a fact)."""
    order = list(doc.chunks)
    rng.shuffle(order)
    seen: set[str] = set()
    second: list[Candidate] = []
    for chunk in order:
        sentences = chunk_sentences(chunk)
        rng.shuffle(sentences)
        for sentence in sentences:
            if sentence in seen:
                continue
            seen.add(sentence)
            asked = [q for q in make_questions(sentence) if q.lang == doc.lang]
            rng.shuffle(asked)
            if asked:
                yield Candidate(chunk, sentence, asked[0])
            if len(asked) > 1:
                second.append(Candidate(chunk, sentence, asked[1]))
    rng.shuffle(second)
    yield from second


@dataclass
class Prompter:
    """Builds prompts exactly as answering does at run time."""

    engine: Engine
    answer_tokens: int
    passage_tokens: int

    def build(self, question: str, hits: Sequence[ScoredChunk]) -> tuple[str, list[ScoredChunk]]:
        """Returns the user message and the passages that fitted in it."""
        from privatellm.prompts import build_messages

        messages, used = build_messages(
            question, hits, self.engine, self.answer_tokens, None, self.passage_tokens
        )
        return messages[-1]["content"], used

    def fits(self, sentence: str, passages: int) -> bool:
        """Returns whether the sentence fits one passage's share of the prompt: a longer one
        would be cut (Chinese takes ~1.8 tokens a character, so ~40 characters fit in 3)."""
        return self.engine.count_tokens(flat(sentence)) <= self.passage_tokens // passages - 6


@dataclass
class Searcher:
    """Searches one collection, keeping only hits from the documents that may be read."""

    service: Service
    collection: str
    allowed: set[str]  # doc ids

    def hits(self, question: str) -> list[ScoredChunk]:
        """Returns the hybrid search's hits from allowed documents, best first."""
        found = self.service.search(question, self.collection, DEEP_SEARCH, "hybrid").hits
        return [h for h in found if h.chunk.doc_id in self.allowed]


@dataclass
class Builder:
    prompter: Prompter
    top_k: int
    rng: random.Random
    moved: int = 0  # source chunks retrieval ranked below top_k, put in by hand
    dropped: Counter[str] = field(default_factory=Counter)  # candidates refused, by reason
    target: Target = "sentence"  # what an answer copies: its whole sentence, or the span only

    def _drop(self, reason: str) -> None:
        """Counts a candidate refused for reason (the summary shows where candidates go)."""
        self.dropped[reason] += 1

    def answer(self, doc: Doc, c: Candidate) -> dict[str, Any] | None:
        """Returns an answerable example, or None when retrieval misses the source chunk or the
        prompt's excerpt cuts the sentence."""
        if not self.prompter.fits(c.sentence, self.top_k):
            self._drop("answer longer than a passage's share")
            return None
        hits = doc.searcher.hits(c.question.text)
        source = next((h for h in hits[:SEARCH_DEPTH] if h.chunk.id == c.chunk.id), None)
        if source is None:
            self._drop("source chunk not retrieved")
            return None
        self.moved += source not in hits[: self.top_k]
        content, _ = self.prompter.build(c.question.text, self.placed(source, hits))
        n = shown_in(c.sentence, prompt_passages(content))
        if not n:
            self._drop("sentence cut from the excerpt")
            return None
        lang = c.question.lang
        target = cited(c.sentence, n) if self.target == "sentence" else span_cited(c, n)
        return example(content, target, "answer", lang, doc.source)

    def placed(self, source: ScoredChunk, hits: list[ScoredChunk]) -> list[ScoredChunk]:
        """Returns the top_k passages with the source among them at a random place (1 to
        MAX_POSITION), the others in their order. Questions made from a sentence share its words,
        so retrieval ranks the source first ~90% of the time; a model trained on that would learn
        to cite [1] rather than the passage that says it."""
        others = [h for h in hits if h.chunk.id != source.chunk.id][: self.top_k - 1]
        others.insert(self.rng.randrange(min(MAX_POSITION, len(others) + 1)), source)
        return others

    def decline(self, doc: Doc, c: Candidate) -> dict[str, Any] | None:
        """Returns an example whose passages come from other documents than the question's and
        do not hold its answer, or None when none are left or one holds it."""
        hits = [h for h in doc.searcher.hits(c.question.text) if h.chunk.doc_id != doc.doc_id]
        if not hits:
            self._drop("no passage from another document")
            return None
        content, used = self.prompter.build(c.question.text, hits[: self.top_k])
        if not used or mentions(c.question.span, [h.chunk.text for h in used]):
            self._drop("answer span in another document's passage")
            return None
        lang = c.question.lang
        return example(content, DECLINE[lang], "decline", lang, doc.source)


def example(content: str, target: str, kind: Kind, lang: Lang, source: str) -> dict[str, Any]:
    """Returns one chat example as the JSONL line holds it."""
    return {
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": target},
        ],
        "meta": {"kind": kind, "lang": lang, "source": source},
    }


# -- the round robin ----------------------------------------------------------------------------


@dataclass
class Tally:
    wanted: dict[tuple[Kind, Lang], int]
    made: Counter[tuple[Kind, Lang]] = field(default_factory=Counter)

    def next_kind(self, lang: Lang) -> Kind | None:
        """Returns the kind of example of this language furthest behind its quota, None when
        both are met."""
        behind = [
            (self.made[kind, lang] / self.wanted[kind, lang], kind)
            for kind in KINDS
            if self.made[kind, lang] < self.wanted[kind, lang]
        ]
        return min(behind)[1] if behind else None

    def move_shortfall(self, lang: Lang, other: Lang) -> bool:
        """Moves what lang's quotas still lack to other's; returns whether anything moved."""
        moved = False
        for kind in KINDS:
            short = self.wanted[kind, lang] - self.made[kind, lang]
            if short > 0:
                self.wanted[kind, lang] -= short
                self.wanted[kind, other] += short
                moved = True
        return moved


def collect(docs: list[Doc], tally: Tally, builder: Builder, seed: int) -> list[dict[str, Any]]:
    """Returns examples taken from the documents until every quota is met; what one language's
    documents cannot give, the other's are asked for."""
    examples = [e for lang in LANGS for e in collect_language(docs, lang, tally, builder, seed)]
    for lang, other in zip(LANGS, reversed(LANGS), strict=True):
        if tally.move_shortfall(lang, other):
            examples += collect_language(docs, other, tally, builder, seed)
    return examples


def collect_language(
    docs: list[Doc], lang: Lang, tally: Tally, builder: Builder, seed: int
) -> list[dict[str, Any]]:
    """Returns examples of one language taken from its documents in turns, one at most per
    document and turn, until its quotas are met or its documents give no more."""
    examples: list[dict[str, Any]] = []
    pool = [d for d in docs if d.lang == lang and _open(d)]
    builder.rng.shuffle(pool)
    while pool and tally.next_kind(lang):
        for doc in pool:
            kind = tally.next_kind(lang)
            if kind is None:
                break
            made = _one(doc, kind, builder, seed)
            if made:
                examples.append(made)
                tally.made[kind, lang] += 1
                doc.used += 1
        pool = [d for d in pool if _open(d)]
        _progress(tally)
    return examples


def _open(doc: Doc) -> bool:
    return not doc.exhausted and doc.used < per_doc_cap(len(doc.chunks))


def _one(doc: Doc, kind: Kind, builder: Builder, seed: int) -> dict[str, Any] | None:
    """Returns one example of kind from the document's next candidates (TRIES_PER_TURN at most)."""
    if doc.candidates is None:
        doc.candidates = doc_candidates(doc, random.Random(f"{seed}:{doc.doc_id}"))
    for _ in range(TRIES_PER_TURN):
        c = next(doc.candidates, None)
        if c is None:
            doc.exhausted = True
            return None
        made = builder.answer(doc, c) if kind == "answer" else builder.decline(doc, c)
        if made:
            doc.misses = 0
            return made
        doc.misses += 1
        if doc.misses >= MAX_MISSES:
            doc.exhausted = True
            return None
    return None


def _progress(tally: Tally) -> None:
    made = " ".join(f"{k}/{lang}={tally.made[k, lang]}" for k, lang in sorted(tally.wanted))
    print(f"... {made}", file=sys.stderr, flush=True)


# -- wiring -------------------------------------------------------------------------------------


def open_service(data_dir: Path) -> Service:
    """Returns the service over data_dir, with settings loaded as the CLI loads them."""
    from privatellm.config import config_files_from_env, load_settings
    from privatellm.service import Service

    return Service(load_settings(config_files_from_env(), {"data_dir": data_dir}))


def corpus_docs(service: Service, collection: str, root: Path, dev: bool) -> list[Doc]:
    """Returns the readable documents of a collection: for the dev set, the training half of
    those under root; for the samples, all of them. Sources are made relative to root."""
    from privatellm.chunking import chunk_id

    target = service.store.open(collection)
    docs: list[Doc] = []
    searcher = Searcher(service, collection, set())
    for record in service.documents(collection):
        relative = _relative(record.source, root)
        if relative is None or (dev and not in_training_half(relative)):
            continue
        chunks = target.chunks([chunk_id(record.id, i) for i in range(record.chunks)])
        if not chunks:
            continue
        lang: Lang = "zh" if is_cjk(" ".join(c.text for c in chunks[:3])) else "en"
        source = relative if dev else f"{root.name}/{relative}"
        docs.append(Doc(record.id, source, lang, chunks, searcher))
        searcher.allowed.add(record.id)
    return docs


def _relative(source: str, root: Path) -> str | None:
    for base in (root.resolve(), root.absolute()):
        try:
            return Path(source).resolve().relative_to(base).as_posix()
        except ValueError:
            continue
    return None


def sample_docs(service: Service, folder: Path, data_dir: Path) -> list[Doc]:
    """Returns the sample documents, ingested into a fresh collection of data_dir through a
    service sharing service's embedding model."""
    from privatellm.service import Service

    settings = service.settings.model_copy(update={"data_dir": data_dir})
    samples = Service(settings, embedder=service.embedder)
    samples.ingest([folder], SAMPLES_COLLECTION)
    return corpus_docs(samples, SAMPLES_COLLECTION, folder, dev=False)


def bundled_prompter(service: Service) -> Prompter:
    """Returns the prompt builder of the bundled model, with the run-time answer settings."""
    from privatellm.config import EngineSettings
    from privatellm.engines import build_engine

    engine = build_engine(EngineSettings.model_validate({"kind": "llamacpp"}))
    s = service.settings
    return Prompter(engine, s.engine.max_tokens, s.answer.prompt_tokens)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    repo = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--data-dir", type=Path, required=True, help="privatellm data dir (read only)")
    p.add_argument("--collection", default="dev", help="collection holding the dev documents")
    p.add_argument("--docs", type=Path, required=True, help="the folder the dev docs lie in")
    p.add_argument("--samples", type=Path, default=repo / "ingest", help="sample documents")
    p.add_argument("--out", type=Path, default=Path("/tmp/cited/train.jsonl"))
    p.add_argument("--n", type=int, default=1500, help="examples wanted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", choices=["sentence", "span"], default="sentence")
    p.add_argument("--decline-share", type=float, default=DECLINE_SHARE)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.monotonic()
    service = open_service(args.data_dir.expanduser())
    with tempfile.TemporaryDirectory(prefix="cited-") as scratch:
        docs = corpus_docs(service, args.collection, args.docs, dev=True)
        docs += sample_docs(service, args.samples.resolve(), Path(scratch))
        rng = random.Random(args.seed)
        top_k = service.settings.retrieval.top_k
        builder = Builder(bundled_prompter(service), top_k, rng, target=args.target)
        tally = Tally(quotas(args.n, args.decline_share))
        examples = collect(docs, tally, builder, args.seed)
    rng.shuffle(examples)
    write(args.out, examples, docs, args, builder)
    used = {e["meta"]["source"] for e in examples}
    counts = Counter((e["meta"]["kind"], e["meta"]["lang"]) for e in examples)
    shown = ", ".join(f"{k} {lang} {counts[k, lang]}" for k, lang in sorted(tally.wanted))
    print(f"dropped: {dict(builder.dropped)}", file=sys.stderr)
    print(
        f"{len(examples)} examples ({shown}; source moved in {builder.moved}) from {len(used)} "
        f"documents of {len(docs)} readable in {time.monotonic() - began:.0f} s -> {args.out}"
    )


def write(
    out: Path,
    examples: list[dict[str, Any]],
    docs: list[Doc],
    args: argparse.Namespace,
    builder: Builder,
) -> None:
    """Writes the examples as JSONL and, beside them, which documents they came from."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    used = sorted({e["meta"]["source"] for e in examples})
    meta = {
        "n": len(examples),
        "seed": args.seed,
        "collection": args.collection,
        "rule": "dev document in the training half: int(sha1(relative posix path), 16) % 2 == 0",
        "counts": dict(Counter(f"{e['meta']['kind']}/{e['meta']['lang']}" for e in examples)),
        "source_moved_in": builder.moved,
        "candidates_dropped": dict(builder.dropped),
        "documents": [s for s in used if not s.startswith(f"{args.samples.name}/")],
        "samples": [s for s in used if s.startswith(f"{args.samples.name}/")],
        "readable_documents": len(docs),
    }
    out.with_suffix(".meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))


def with_fixed_hash_seed() -> None:
    """Runs this script again with PYTHONHASHSEED=0 unless it has it already.

    Why: the passage excerpts depend on it. prompts.excerpt starts at the sentence that shares
    the most rare words with the question, adding up 1/df over a set of words; the set's order
    follows the string hash seed, the float sums differ in the last bit, and near ties went the
    other way in 5 of 1500 examples between two runs.
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    with_fixed_hash_seed()
    main()
