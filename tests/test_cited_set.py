"""scripts/build_cited_set.py: the rules that make questions, targets and refusals from sentences.

Fast: no store, no model. The prompts come from the real build_messages with the scripted engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from privatellm.config import EngineSettings
from privatellm.engines.fake import FakeEngine
from privatellm.text import split_markers, split_sentences
from privatellm.types import Chunk, ScoredChunk

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_cited_set.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_cited_set", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cs = _load()


def asked(sentence: str) -> dict[str, str]:
    """Returns question text -> answer span for every question the sentence gives."""
    return {q.text: q.span for q in cs.make_questions(sentence)}


# -- the training half --------------------------------------------------------------------------


def test_training_half_is_the_even_sha1_of_the_relative_path() -> None:
    assert cs.in_training_half("squad/Alps.txt")
    assert cs.in_training_half("cmrc2018/DEV_1.txt")
    assert not cs.in_training_half("cmrc2018/DEV_0.txt")
    paths = [f"cmrc2018/DEV_{i}.txt" for i in range(400)]
    for p in paths:
        assert cs.in_training_half(p) == (int(hashlib.sha1(p.encode()).hexdigest(), 16) % 2 == 0)
    share = sum(map(cs.in_training_half, paths)) / len(paths)
    assert 0.4 < share < 0.6


# -- English questions --------------------------------------------------------------------------


def test_a_year_in_the_first_clause_is_asked_with_the_auxiliary_in_front() -> None:
    got = asked("Google was founded in 1998 by Larry Page.")
    assert got["In what year was Google founded by Larry Page?"] == "1998"


def test_a_date_that_opens_the_sentence_is_asked_at_its_end() -> None:
    got = asked("In 1957, the state of Arkansas refused to honor a federal court order.")
    assert got == {
        "The state of Arkansas refused to honor a federal court order in what year?": "1957"
    }
    got = asked("On January 17, 1961, Eisenhower gave his final televised address.")
    assert got == {"Eisenhower gave his final televised address on what date?": "January 17, 1961"}


def test_a_date_in_a_later_clause_is_not_fronted_onto_the_first_verb() -> None:
    got = asked("Doud was born in Denison in 1917, and died of scarlet fever in 1921.")
    assert "In what year was Doud born in Denison?" in got
    assert got["In what year was Doud born in Denison?"] == "1917"
    assert all(
        not q.startswith("In what year was Doud born") for q, s in got.items() if s == "1921"
    )


def test_counts_shares_and_amounts_become_how_many_what_percentage_how_much() -> None:
    got = asked("The company employs 12,000 people in its three factories near the coast.")
    assert got == {
        "The company employs how many people in its three factories near the coast?": (
            "12,000 people"
        )
    }
    got = asked("Net sales increased 20% to $177.9 billion during the fiscal year.")
    assert got["Net sales increased by what percentage to $177.9 billion during the fiscal year?"]
    assert got["Net sales increased 20% to what amount during the fiscal year?"] == "$177.9 billion"


def test_names_are_asked_only_where_no_date_or_number_is() -> None:
    got = asked("The tower was designed by the engineer Gustave Eiffel for the fair.")
    assert got == {}  # "engineer Gustave Eiffel": a name after a noun is not asked alone
    got = asked("The iron tower was designed by Gustave Eiffel for the world fair.")
    assert got == {"The iron tower was designed by whom for the world fair?": "Gustave Eiffel"}
    assert all(
        s != "Gustave Eiffel" for s in asked("The tower by Gustave Eiffel opened in 1889.").values()
    )


def test_list_items_titles_and_possessives_are_not_asked_as_names() -> None:
    assert asked("The island lies between Australia, New Zealand and New Caledonia today.") == {}
    assert asked('The museum shows the leotard from the "Single Ladies" video clip.') == {}
    assert asked("About thirty of Ibn Sina's shorter works were composed in the city.") == {}


@pytest.mark.parametrize(
    "sentence",
    [
        "It was founded in 1998 by two students.",  # the subject is a pronoun
        "In 1998 he founded the company with a friend.",  # after the date, too
        "Greece has high standards of living[citation needed] since 1990 at least.",
        "In 1897, Frank Shuman, a U.S.",  # cut short at an abbreviation
        "Revenue was up in 2017.",  # too short to be a question
        "Net Sales Operating Income Total Assets 2017 2016 2015 Change.",  # a table row
        " ".join(["The long sentence went on"] * 10) + " until 1999.",  # too long
    ],
)
def test_sentences_that_cannot_stand_alone_give_no_question(sentence: str) -> None:
    assert asked(sentence) == {}


def test_every_english_question_leaves_its_answer_out_and_ends_in_a_question_mark() -> None:
    sentences = [
        "Google acquired YouTube in October 2006 for $1.65 billion.",
        "The Avicenna Mausoleum and Museum in Hamadan was built in 1952.",
        "The city has a population of 3 million people and covers 120 square miles.",
    ]
    for sentence in sentences:
        got = asked(sentence)
        assert got
        for question, span in got.items():
            assert question.endswith("?") and question[0].isupper()
            assert span in sentence and span not in question


# -- Chinese questions --------------------------------------------------------------------------


def test_chinese_years_and_counts_become_哪一年_and_多少() -> None:
    got = asked("谷歌于1998年由拉里·佩奇创立，总部位于加州山景城，员工超过3万人。")
    assert got["谷歌于哪一年由拉里·佩奇创立？"] == "1998年"
    assert got["谷歌于1998年由拉里·佩奇创立，总部位于加州山景城，员工超过多少万人？"] == "3万人"
    # A long one is cut to the subject's clause and the clause asked about.
    got = asked(
        "漠河机场是中国黑龙江省北部大兴安岭地区漠河县的机场，位于县城西林吉镇西南9公里处，"
        "是该省十一五规划重点建设项目，总投资2.38亿元人民币。"
    )
    assert got["漠河机场是中国黑龙江省北部大兴安岭地区漠河县的机场，总投资多少亿元人民币？"] == (
        "2.38亿元"
    )


def test_chinese_dates_and_titles_become_什么时候_and_哪部() -> None:
    got = asked("张艺谋执导的电影《英雄》于2002年12月14日在中国大陆上映。")
    assert got["张艺谋执导的电影《英雄》于什么时候在中国大陆上映？"] == "2002年12月14日"
    assert got["张艺谋执导的哪部电影于2002年12月14日在中国大陆上映？"] == "电影《英雄》"
    got = asked("复查合格者，正式确认国防生资格，填写《国防生登记表》并发放奖学金。")
    assert any("哪份文件" in q for q in got)  # a form is a document, not a work


def test_a_clause_that_only_says_when_keeps_the_subject_after_it() -> None:
    got = asked("2001赛季，内托是葡萄牙球队科英布拉大学最佳射手，在26场联赛中攻入13个入球。")
    assert (
        got["2001赛季，内托是葡萄牙球队科英布拉大学最佳射手，在多少场联赛中攻入13个入球？"]
        == "26场"
    )


@pytest.mark.parametrize(
    "sentence",
    [
        "他于1998年加入球队并在当年出场30次。",  # the subject is a pronoun
        "该公司于1998年成立，总部位于北京。",
        "1964年，他草创了日本第一家好莱坞式的化粧工作室",  # no full stop: half a sentence
        "违约的还须缴纳2—3倍的违约金，并依据有关规定收回奖学金。",  # a range's end
    ],
)
def test_chinese_sentences_that_cannot_stand_alone_give_no_question(sentence: str) -> None:
    assert asked(sentence) == {}


def test_第一_is_not_asked_as_a_rank() -> None:
    got = asked("漠河机场是中国第一个建于永久冻土带的机场，于2008年6月18日通航。")
    assert all("第几" not in q for q in got)
    assert "漠河机场是中国第一个建于永久冻土带的机场，于什么时候通航？" in got


# -- targets and checks -------------------------------------------------------------------------


def test_the_marker_goes_where_the_citation_parser_finds_it() -> None:
    for sentence, n, want in [
        ("Google was founded  in 1998.", 2, "Google was founded in 1998 [2]."),
        ("谷歌于1998年创立。", 1, "谷歌于1998年创立 [1]。"),
    ]:
        target = cs.cited(sentence, n)
        assert target == want
        pieces = split_sentences(target)
        assert len(pieces) == 1 and split_markers(pieces[0])[1] == [n]
    # After the full stop it would be a sentence of its own, its number lost to the answer.
    assert len(split_sentences("Google was founded in 1998. [2]")) == 2


def test_mentions_finds_the_answer_whatever_its_spacing_case_or_thousands_commas() -> None:
    assert cs.mentions("12,000 people", ["It employs 12000  People now."])
    assert cs.mentions("1998年", ["谷歌于1998年成立。"])
    assert not cs.mentions("1998", ["Founded in 1999.", "No year here."])
    assert not cs.mentions("3万人", ["员工超过2万人"])


def chunk(cid: str, doc: str, text: str, index: int = 0) -> Chunk:
    return Chunk(cid, doc, f"/docs/{doc}.txt", None, index, 0, len(text), text)


def test_prompt_passages_reads_back_what_build_messages_wrote() -> None:
    from privatellm.prompts import build_messages

    engine = FakeEngine(EngineSettings.model_validate({"kind": "fake"}))
    texts = ["Alpha beta gamma.\nDelta  epsilon.", "Google was founded in 1998."]
    hits = [ScoredChunk(chunk(f"c{i}", f"d{i}", t), 1.0) for i, t in enumerate(texts)]
    messages, _ = build_messages("When was Google founded?", hits, engine, 128, None, 240)
    shown = cs.prompt_passages(messages[-1]["content"])
    assert shown == ["Alpha beta gamma. Delta epsilon.", "Google was founded in 1998."]
    assert cs.shown_in("Google was founded  in 1998.", shown) == 2
    assert cs.shown_in("Google was founded in 1998 by Larry Page.", shown) == 0


def test_quotas_make_n_in_the_asked_shares() -> None:
    q = cs.quotas(1500)
    assert sum(q.values()) == 1500
    assert q["decline", "en"] + q["decline", "zh"] == 225
    assert q["answer", "en"] == round(1275 * 0.45) and q["answer", "zh"] == 1275 - q["answer", "en"]


def test_long_documents_may_give_more_examples_up_to_a_cap() -> None:
    assert [cs.per_doc_cap(n) for n in (1, 15, 16, 45, 10_000)] == [3, 3, 6, 9, 24]


def test_the_kind_furthest_behind_its_quota_comes_next() -> None:
    tally = cs.Tally({("answer", "en"): 85, ("decline", "en"): 15})
    assert tally.next_kind("en") == "answer"  # both at 0: the tie goes to answer
    tally.made["answer", "en"] = 10
    assert tally.next_kind("en") == "decline"
    tally.made.update({("answer", "en"): 75, ("decline", "en"): 15})
    assert tally.next_kind("en") is None


# -- examples from hits (a stub search, the scripted engine) ------------------------------------


@dataclass
class StubSearch:
    found: list[ScoredChunk]
    asked: list[str] = field(default_factory=list)

    def hits(self, question: str) -> list[ScoredChunk]:
        self.asked.append(question)
        return self.found


SOURCE = "The iron tower was designed by Gustave Eiffel for the world fair in 1889."


def make_doc(search: StubSearch, source: Chunk) -> Any:
    return cs.Doc(source.doc_id, "squad/Tower.txt", "en", [source], search)


def candidate(source: Chunk) -> Any:
    q = cs.make_questions(SOURCE)[0]
    return cs.Candidate(source, SOURCE, q)


def builder(seed: int = 0) -> Any:
    prompter = cs.Prompter(FakeEngine(EngineSettings.model_validate({"kind": "fake"})), 128, 240)
    return cs.Builder(prompter, 3, random.Random(seed))


OTHER = "Paris hosted a fair with many pavilions."


def others(count: int, text: str = OTHER) -> list[ScoredChunk]:
    return [
        ScoredChunk(chunk(f"o{i}", f"other{i}", f"{text} Item {i}."), 0.5) for i in range(count)
    ]


def test_an_answer_cites_the_passage_that_shows_its_sentence_wherever_it_is_placed() -> None:
    source = chunk("s", "tower", f"Paris in spring. {SOURCE} It still stands.")
    found = [ScoredChunk(source, 0.9), *others(4)]  # retrieval ranks the source first
    numbers = set()
    for seed in range(12):
        made = builder(seed).answer(make_doc(StubSearch(found), source), candidate(source))
        assert made is not None
        shown = cs.prompt_passages(made["messages"][0]["content"])
        n = next(i for i, p in enumerate(shown, 1) if SOURCE in p)
        assert made["messages"][1]["content"] == (
            f"The iron tower was designed by Gustave Eiffel for the world fair in 1889 [{n}]."
        )
        # The other passages keep retrieval's order.
        assert [p for p in shown if SOURCE not in p] == [f"{OTHER} Item {i}." for i in (0, 1)]
        numbers.add(n)
    assert numbers == {1, 2, 3}  # not always [1]: the model must find the passage
    assert made["meta"] == {"kind": "answer", "lang": "en", "source": "squad/Tower.txt"}
    assert made["messages"][0]["content"].endswith(f"Question: {candidate(source).question.text}")


def test_a_source_ranked_below_the_prompt_goes_in_at_position_three_or_better() -> None:
    source = chunk("s", "tower", SOURCE)
    found = [*others(6), ScoredChunk(source, 0.1)]
    numbers = set()
    for seed in range(12):
        b = builder(seed)
        made = b.answer(make_doc(StubSearch(found), source), candidate(source))
        assert made is not None and b.moved == 1
        n = int(made["messages"][1]["content"].rsplit("[", 1)[1].split("]")[0])
        numbers.add(n)
        assert len(cs.prompt_passages(made["messages"][0]["content"])) == 3
    assert numbers == {1, 2, 3}


def test_no_answer_when_retrieval_misses_the_source() -> None:
    source = chunk("s", "tower", SOURCE)
    assert builder().answer(make_doc(StubSearch(others(5)), source), candidate(source)) is None


def test_a_refusal_has_no_passage_of_the_question_document_nor_its_answer() -> None:
    source = chunk("s", "tower", SOURCE)
    sibling = chunk("s2", "tower", "The tower is repainted every seven years.", 1)
    found = [ScoredChunk(source, 0.9), ScoredChunk(sibling, 0.8), *others(2)]
    made = builder().decline(make_doc(StubSearch(found), source), candidate(source))
    assert made is not None
    assert made["messages"][1]["content"] == "The documents don't say."
    assert made["meta"]["kind"] == "decline"
    shown = cs.prompt_passages(made["messages"][0]["content"])
    assert len(shown) == 2 and all("tower" not in p.lower() for p in shown)
    # A passage from another document that holds the answer span: no refusal.
    leak = others(2, "The plans for the fair date from 1889.")
    assert builder().decline(make_doc(StubSearch([*leak]), source), candidate(source)) is None


def test_chunk_sentences_are_whole_sentences() -> None:
    text = "福大是澳大利亚创新研究大学联盟的一员；在医药、人文的学术排名居澳大利亚前10名。下一句。"
    assert cs.chunk_sentences(chunk("c", "d", text)) == [
        "福大是澳大利亚创新研究大学联盟的一员；在医药、人文的学术排名居澳大利亚前10名。",
        "下一句。",
    ]
    # A later chunk may start mid-sentence (chunks overlap): its first piece is left out.
    later = chunk("c2", "d", "the end of one. The tower was built in 1889.", index=3)
    assert cs.chunk_sentences(later) == ["The tower was built in 1889."]
    # A PDF's single line breaks wrap lines; text files' end sentences.
    wrapped = "The tower was\nbuilt in 1889. It is tall."
    pdf = Chunk("p", "d", "/d.pdf", 1, 0, 0, len(wrapped), wrapped)
    assert cs.chunk_sentences(pdf) == ["The tower was built in 1889.", "It is tall."]
    assert cs.chunk_sentences(chunk("t", "d", wrapped))[0] == "The tower was"
    # ... unless its lines are wrapped prose (Markdown), and a list number joins its item.
    markdown = (
        "1. The text is split into chunks of about 200 tokens, measured with the embedding\n"
        "model's own tokenizer, with 32 tokens of overlap between neighbours. Each chunk is\n"
        "embedded with all-MiniLM-L6-v2, a 384-dimensional sentence embedding model.\n"
    )
    assert cs.chunk_sentences(chunk("m", "d", markdown)) == [
        "1. The text is split into chunks of about 200 tokens, measured with the embedding "
        "model's own tokenizer, with 32 tokens of overlap between neighbours.",
        "Each chunk is embedded with all-MiniLM-L6-v2, a 384-dimensional sentence embedding model.",
    ]


def test_what_one_language_lacks_the_other_is_asked_for() -> None:
    tally = cs.Tally(cs.quotas(100))
    tally.made.update({("answer", "zh"): 40, ("decline", "zh"): 8})
    assert tally.move_shortfall("zh", "en")
    assert tally.wanted["answer", "zh"] == 40 and tally.wanted["decline", "zh"] == 8
    assert sum(tally.wanted.values()) == 100
    assert tally.wanted["answer", "en"] == cs.quotas(100)["answer", "en"] + 47 - 40
    assert not tally.move_shortfall("zh", "en")  # nothing left to move


def test_in_a_name_is_where_only_after_a_verb_of_place() -> None:
    got = asked("The composer was born in New Orleans to a family of musicians.")
    assert got == {"The composer was born where to a family of musicians?": "New Orleans"}
    got = asked("Parliamentary debate may be conducted in Lebanese Arabic by the members.")
    assert got == {
        "Parliamentary debate may be conducted in what by the members?": "Lebanese Arabic"
    }


def test_a_question_in_the_documents_own_voice_is_not_asked() -> None:
    sentence = "During fiscal 2019, we repurchased 21.2 million shares at a cost of $1.5 billion."
    assert asked(sentence) == {}
    assert asked("The firm repurchased 21.2 million shares at a cost of $1.5 billion.") == {
        "The firm repurchased how many shares at a cost of $1.5 billion?": "21.2 million shares",
        "The firm repurchased 21.2 million shares at a cost of what amount?": "$1.5 billion",
    }


def test_chinese_what_who_and_where_questions() -> None:
    assert asked("量化是用更少的比特保存模型权重。") == {"量化是什么？": "用更少的比特保存模型权重"}
    assert asked("新角龙类是由保罗·塞里诺在1986年提出。") == {
        "新角龙类是由保罗·塞里诺在哪一年提出？": "1986年"  # "是由" is not a definition
    }
    assert asked("另外也被认为是「龙猫」的原型。") == {}  # no subject
    got = asked("《战国无双3》是由光荣和ω-force开发的战国无双系列作品。")
    assert got["《战国无双3》是由谁开发的战国无双系列作品？"] == "光荣和ω-force"
    got = asked("漠河机场位于县城西林吉镇西南，是该省重点建设项目。")
    assert got["漠河机场位于哪里？"] == "县城西林吉镇西南"
    got = asked("2009年3月，夏威夷大学将其植物标本馆命名为洛克馆。")
    assert got["2009年3月，夏威夷大学将其植物标本馆命名为什么？"] == "洛克馆"


def test_a_date_in_a_clause_that_opens_with_after_is_not_fronted() -> None:
    got = asked(
        "After the White Stockings had a successful season in 1886, other teams began bringing "
        "their players to spring training."
    )
    assert got == {
        "After the White Stockings had a successful season in what year, other teams began "
        "bringing their players to spring training?": "1886"
    }


def test_an_abbreviation_does_not_end_the_sentence() -> None:
    text = (
        "When the plot was uncovered, the eunuchs arrested Empress Dowager Dou (d. 97 AD) at once."
    )
    assert cs.chunk_sentences(chunk("c", "d", text)) == [text]


def test_a_clause_after_the_question_word_is_cut_only_when_a_verb_is_left() -> None:
    got = asked("In 1989, Gaddafi was overjoyed by the founding of the union, uniting five states.")
    assert got == {"In what year was Gaddafi overjoyed by the founding of the union?": "1989"}
    got = asked("Al Gore in 2000, though, was the last Democrat to win any counties in the state.")
    assert list(got) == [
        "Al Gore in what year, though, was the last Democrat to win any counties in the state?"
    ]


def test_one_number_of_a_list_is_not_asked_alone() -> None:
    got = asked(
        "Shipping costs were $11.5 billion, $16.2 billion, and $21.7 billion in those years."
    )
    assert all(not q.startswith("Shipping costs were") or "in what year" in q for q in got)
    assert not any(s.startswith("$") for s in got.values())
    assert asked("Llama 3 was released with 8 and 70 billion parameters for the public.") == {}


def test_a_chinese_question_does_not_open_on_a_pronoun() -> None:
    assert asked("1970年他与妻子成立了凤鸣影业公司，曾从事电影创作。") == {}
