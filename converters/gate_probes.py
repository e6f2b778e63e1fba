"""The accuracy gate for fast variants (bf16, int8, ...): a larger probe set and its report.

:mod:`rerank.converters.probes` (13 pairs) checks that a conversion is *correct*; it is too small to
say whether a lossy variant keeps a model's *rankings*. This module has

* :func:`gate_pairs`: ~310 (query, document) pairs over 10 queries in 8 languages and 7
  scripts, generated from the code below (no downloads, same pairs on every call). Per query:
  related documents, unrelated ones (other queries' documents), **near-duplicates** (one
  sentence with one or two words swapped: the hard case, their scores differ by little), long
  documents (past 256 tokens, some past 512 so truncation runs too), very short ones, and text
  in other scripts;
* :func:`gate_report`: per query, Spearman's rank correlation, whether the top 3 are kept
  (same documents, same order; ``top3_set_kept``: same documents in any order, reported, not
  gated), top-10 agreement (overlap of the two top-10 sets), max |Δ logit|
  and max |Δ| relative to that query's score range; and the worst of each over the queries;
* :func:`passes`: a variant passes only if **every** query keeps Spearman >= 0.99 and its
  top 3, and max |Δ logit| <= 0.05.

Pure Python and numpy: the report is cheap enough to compute at server start-up.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SPEARMAN = 0.99
TOP_K = 3
TOP_AGREEMENT_K = 10
MAX_ABS_DIFF = 0.05
SEED = 20261127


@dataclass(frozen=True)
class Topic:
    """One query and the material its documents are made of."""

    key: str
    query: str
    related: tuple[str, ...]
    """On-topic sentences, in the query's language."""
    template: str
    """An on-topic sentence with ``{0}``, ``{1}``, ... slots: near-duplicates fill them differently."""
    slots: tuple[tuple[str, ...], ...]
    short: tuple[str, ...]
    other_script: tuple[str, ...]
    """On-topic or off-topic text in a script other than the query's."""
    joiner: str = " "


TOPICS: tuple[Topic, ...] = (
    Topic(
        "panda-en",
        "What do giant pandas eat?",
        (
            "Giant pandas eat almost nothing but bamboo, up to 38 kilograms of it a day.",
            "The panda's diet is 99 percent bamboo leaves, stems and shoots.",
            "In the wild, pandas occasionally eat small rodents, birds or carrion.",
            "Because bamboo is poor in nutrients, a panda spends 10 to 16 hours a day feeding.",
            "Zoo pandas are fed bamboo, special biscuits, apples and carrots.",
            "A panda's thumb is an enlarged wrist bone that helps it grip bamboo stalks.",
        ),
        "Giant pandas {0} eat bamboo {1}, and they {2} feed for many hours each day.",
        (("mostly", "mainly", "almost only"), ("shoots", "leaves", "stems"), ("usually", "often", "typically")),
        ("bamboo", "pandas", "yes", "38 kg"),
        ("大熊猫主要以竹子为食。", "Большая панда питается в основном бамбуком."),
    ),
    Topic(
        "solar-en",
        "how do solar panels generate electricity",
        (
            "Solar panels are made of photovoltaic cells that turn sunlight into direct current.",
            "When photons hit a silicon cell they knock electrons loose, creating an electric current.",
            "An inverter converts the panel's direct current into alternating current for the home.",
            "Panel efficiency is typically between 18 and 23 percent for modern silicon modules.",
            "Solar output drops on cloudy days and is zero at night, so systems often include batteries.",
            "The p-n junction inside each cell creates the electric field that drives the current.",
        ),
        "Solar panels {0} sunlight into {1} using photovoltaic cells {2} of silicon.",
        (("convert", "turn", "change"), ("electricity", "electric current", "power"), ("made", "built")),
        ("solar", "photovoltaic", "no", "23%"),
        ("太阳能电池板把阳光转换成电能。", "Les panneaux solaires transforment la lumière en électricité."),
    ),
    Topic(
        "vitamin-en",
        "symptoms of vitamin D deficiency in adults",
        (
            "Vitamin D deficiency in adults can cause fatigue, bone pain and muscle weakness.",
            "Low vitamin D levels are linked to a higher risk of osteoporosis and fractures.",
            "Some people with vitamin D deficiency experience low mood or depression.",
            "A blood test measuring 25-hydroxyvitamin D is used to diagnose the deficiency.",
            "Adults who get little sunlight or have darker skin are more likely to be deficient.",
            "Treatment usually involves vitamin D supplements and more time outdoors.",
        ),
        "Common {0} of low vitamin D in adults include {1} and {2} pain.",
        (("symptoms", "signs"), ("tiredness", "fatigue", "weakness"), ("bone", "muscle", "joint")),
        ("vitamin D", "fatigue", "ok", "D3"),
        ("ビタミンD不足は骨の痛みや疲労を引き起こします。", "Дефицит витамина D вызывает усталость."),
    ),
    Topic(
        "eiffel-en",
        "when was the Eiffel Tower built",
        (
            "The Eiffel Tower was built between 1887 and 1889 as the entrance arch for the World's Fair.",
            "Gustave Eiffel's company designed and built the tower for the 1889 Exposition Universelle.",
            "Construction of the wrought-iron tower took two years, two months and five days.",
            "When it was completed in March 1889, the tower was the tallest structure in the world.",
            "The tower is 330 metres tall and was originally meant to stand for only 20 years.",
            "About 300 workers assembled 18,038 iron parts with 2.5 million rivets.",
        ),
        "The Eiffel Tower was {0} in {1} for the {2} World's Fair in Paris.",
        (("built", "completed", "finished"), ("1889", "1887", "1888"), ("1889", "Paris", "great")),
        ("1889", "Paris", "tower", "?"),
        ("埃菲尔铁塔建于1889年。", "برج إيفل بني في عام ١٨٨٩ في باريس."),
    ),
    Topic(
        "python-en",
        "how to reverse a linked list in python",
        (
            "To reverse a singly linked list, walk it once and point each node's next at its predecessor.",
            "Keep three references, prev, current and next, and advance them together until current is None.",
            "A recursive solution reverses the rest of the list and then appends the head at the end.",
            "The iterative reversal runs in O(n) time and O(1) extra space.",
            "In Python, `prev, cur = None, head; while cur: cur.next, prev, cur = prev, cur, cur.next` reverses it.",
            "Python's built-in list has a reverse() method, but a linked list needs pointer manipulation.",
        ),
        "To {0} a linked list in Python, iterate over the nodes and {1} each {2} pointer.",
        (("reverse", "invert", "flip"), ("swap", "flip", "redirect"), ("next", "link")),
        ("def reverse(head):", "O(n)", "python", "list"),
        ("Обратить связный список можно за один проход.", "連結リストを逆順にするには次のポインタを付け替えます。"),
    ),
    Topic(
        "canberra-fr",
        "Quelle est la capitale de l'Australie ?",
        (
            "La capitale de l'Australie est Canberra, et non Sydney comme on le croit souvent.",
            "Canberra a été choisie en 1908 comme compromis entre Sydney et Melbourne.",
            "Le Parlement australien siège à Canberra depuis 1927.",
            "Canberra est située dans le Territoire de la capitale australienne, au sud-est du pays.",
            "La ville a été dessinée par les architectes américains Walter Burley Griffin et Marion Mahony Griffin.",
            "Sydney est la plus grande ville d'Australie, mais ce n'est pas la capitale.",
        ),
        "La {0} de l'Australie est Canberra, {1} entre Sydney et {2}.",
        (("capitale", "ville capitale"), ("située", "choisie", "construite"), ("Melbourne", "la côte")),
        ("Canberra", "Sydney", "oui", "1908"),
        ("The capital of Australia is Canberra.", "澳大利亚的首都是堪培拉。"),
    ),
    Topic(
        "heatpump-de",
        "Wie funktioniert eine Wärmepumpe?",
        (
            "Eine Wärmepumpe entzieht der Umgebung Wärme und hebt sie mit einem Verdichter "
            "auf ein höheres Temperaturniveau.",
            "Das Kältemittel verdampft bei niedriger Temperatur und nimmt dabei Wärme aus Luft, Erde oder Wasser auf.",
            "Der Kompressor verdichtet das gasförmige Kältemittel, wodurch es sich stark erhitzt.",
            "Im Verflüssiger gibt das Kältemittel seine Wärme an das Heizwasser ab.",
            "Die Jahresarbeitszahl gibt an, wie viel Wärme pro Kilowattstunde Strom erzeugt wird.",
            "Luft-Wasser-Wärmepumpen sind am günstigsten, Erdwärmepumpen am effizientesten.",
        ),
        "Eine Wärmepumpe {0} der Umgebung Wärme und {1} sie mit einem {2} auf.",
        (("entzieht", "entnimmt"), ("hebt", "bringt", "wertet"), ("Verdichter", "Kompressor")),
        ("Wärmepumpe", "Strom", "ja", "COP 4"),
        ("A heat pump moves heat from outside air into the house.", "Тепловой насос переносит тепло."),
    ),
    Topic(
        "wall-zh",
        "长城有多长？",
        (
            "根据2012年的测量，明长城全长约8851.8公里。",
            "历代长城的总长度超过两万一千公里。",
            "长城始建于春秋战国时期，秦始皇统一中国后将各段连接起来。",
            "现存的长城大部分是明朝修建的。",
            "八达岭长城是最著名、游客最多的一段。",
            "长城是世界文化遗产，也是中国的象征。",
        ),
        "长城{0}长约{1}公里，{2}是明朝修建的。",
        (("全", "总", ""), ("8851", "两万一千", "8852"), ("大部分", "主要", "多数")),
        ("长城", "8851公里", "是", "明朝"),
        ("The Great Wall of China is over 21,000 kilometres long.", "万里の長城の全長は約2万キロです。"),
        joiner="",
    ),
    Topic(
        "fuji-ja",
        "富士山の高さはどれくらいですか",
        (
            "富士山の標高は3776メートルで、日本で一番高い山です。",
            "富士山は静岡県と山梨県にまたがる活火山です。",
            "最後の噴火は1707年の宝永噴火でした。",
            "毎年7月から9月の登山シーズンに多くの人が山頂を目指します。",
            "2013年に富士山は世界文化遺産に登録されました。",
            "山頂には富士山頂郵便局があります。",
        ),
        "富士山の{0}は{1}メートルで、日本で{2}高い山です。",
        (("標高", "高さ"), ("3776", "3775", "3778"), ("一番", "最も")),
        ("富士山", "3776m", "はい", "山"),
        ("Mount Fuji is 3,776 metres high.", "후지산의 높이는 3776미터입니다."),
        joiner="",
    ),
    Topic(
        "photosynthesis-ru",
        "Что такое фотосинтез?",
        (
            "Фотосинтез — это процесс, при котором растения превращают свет, воду и углекислый газ "
            "в глюкозу и кислород.",
            "Фотосинтез происходит в хлоропластах, содержащих пигмент хлорофилл.",
            "Световые реакции фотосинтеза идут в тилакоидах и дают АТФ и НАДФН.",
            "В цикле Кальвина углекислый газ фиксируется и превращается в сахара.",
            "Благодаря фотосинтезу в атмосфере Земли есть кислород.",
            "Некоторые бактерии тоже способны к фотосинтезу.",
        ),
        "Фотосинтез — это {0}, при котором растения {1} свет в {2} энергию.",
        (("процесс", "механизм"), ("превращают", "преобразуют"), ("химическую", "полезную", "запасённую")),
        ("хлорофилл", "фотосинтез", "да", "CO2"),
        ("Photosynthesis turns light into chemical energy.", "التمثيل الضوئي يحول الضوء إلى طاقة كيميائية."),
    ),
)

_FILLER = {
    # Long documents mix on-topic sentences with this off-topic filler, so that the relevant part
    # sits at different depths (and past the 512-token window in the longest ones).
    "latin": (
        "The committee met again on Tuesday to review the budget for the coming year.",
        "Several members asked for more detail on maintenance costs and staffing.",
        "The minutes were approved without changes and the meeting closed at noon.",
        "Parking on the east side of the building will be closed during the repairs.",
        "Volunteers are still needed for the spring cleaning of the community garden.",
    ),
    "cjk": (
        "会议在周二再次召开，讨论明年的预算。",
        "几位成员要求提供更多关于维护费用的细节。",
        "会议记录未经修改获得通过。",
        "维修期间大楼东侧停车场将关闭。",
    ),
    "ja": (
        "委員会は火曜日に再び開かれ、来年度の予算について話し合いました。",
        "数名の委員が維持費の詳細を求めました。",
        "議事録は修正なしで承認されました。",
        "修理の間、建物の東側の駐車場は閉鎖されます。",
    ),
    "cyrillic": (
        "Комитет снова собрался во вторник, чтобы обсудить бюджет на следующий год.",
        "Несколько членов попросили подробнее рассказать о расходах на содержание.",
        "Протокол был утверждён без изменений.",
        "Во время ремонта парковка у здания будет закрыта.",
    ),
}


def _filler(topic: Topic) -> tuple[str, ...]:
    if topic.key.endswith("-zh"):
        return _FILLER["cjk"]
    if topic.key.endswith("-ja"):
        return _FILLER["ja"]
    if topic.key.endswith("-ru"):
        return _FILLER["cyrillic"]
    return _FILLER["latin"]


def _near_duplicates(topic: Topic, rng: random.Random, count: int) -> list[str]:
    """``count`` distinct fillings of the topic's template; any two differ in a few words."""
    fillings = list(itertools.product(*topic.slots))
    rng.shuffle(fillings)
    return [topic.template.format(*f) for f in fillings[:count]]


def _long(topic: Topic, rng: random.Random, sentences: Sequence[str], target_chars: int) -> str:
    """On-topic ``sentences`` placed at random depths in shuffled filler, about ``target_chars`` long."""
    filler = list(_filler(topic))
    parts: list[str] = []
    while sum(len(p) for p in parts) < target_chars:
        rng.shuffle(filler)
        parts += filler
    for sentence in sentences:
        parts.insert(rng.randrange(len(parts) + 1), sentence)
    return topic.joiner.join(parts)


def gate_pairs() -> tuple[list[tuple[str, str]], list[str]]:
    """(pairs, group of each pair): the gate's probe set, the same on every call."""
    rng = random.Random(SEED)
    pairs: list[tuple[str, str]] = []
    groups: list[str] = []
    for topic in TOPICS:
        others = [t for t in TOPICS if t is not topic]
        documents: list[str] = []
        documents += topic.related  # 6 related
        documents += _near_duplicates(topic, rng, 8)  # 8 near-duplicates
        for other in rng.sample(others, 6):  # 6 unrelated, some in other languages
            documents.append(rng.choice(other.related))
        # 3 long: related sentences deep in filler (~300 and ~700 tokens), and pure filler.
        cjk = topic.joiner == ""
        documents.append(_long(topic, rng, topic.related[:3], 450 if cjk else 1500))
        documents.append(_long(topic, rng, topic.related[3:], 900 if cjk else 3200))
        documents.append(_long(topic, rng, (), 400 if cjk else 1400))
        documents += topic.short  # 4 short
        documents += topic.other_script  # 2 other scripts
        documents.append(rng.choice(rng.choice(others).related)[:40])  # an unrelated sentence, cut off
        # One near-duplicate of a related sentence with its words in the query's script but
        # reordered: same words, different meaning.
        words = topic.related[0].split(" ")
        if len(words) > 4:
            words[1], words[-2] = words[-2], words[1]
            documents.append(" ".join(words))
        else:
            documents.append(topic.related[0][::-1])
        for document in dict.fromkeys(documents):  # an unrelated sentence may be drawn twice
            pairs.append((topic.query, document))
            groups.append(topic.key)
    return pairs, groups


# --------------------------------------------------------------------------------------------
# The report


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if np.any(counts > 1):
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (1.0 for two identical constant ones)."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _top(x: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-x, kind="stable")[:k]]


def gate_report(reference_scores: Sequence[float], variant_scores: Sequence[float], groups: Sequence[str]) -> dict:
    """Per-query and worst-case accuracy figures of a variant against the reference (fp32).

    ``groups[i]`` names the query of pair ``i``; the pairs of a query need not be contiguous.
    """
    ref = np.asarray(reference_scores, dtype=float)
    var = np.asarray(variant_scores, dtype=float)
    labels = list(groups)
    if ref.shape != var.shape or ref.ndim != 1 or len(labels) != len(ref):
        raise ValueError(f"shapes differ: reference {ref.shape}, variant {var.shape}, groups {len(labels)}")
    if not np.all(np.isfinite(var)):
        raise ValueError("the variant's scores contain NaN or inf")
    per_query: dict[str, dict] = {}
    for label in dict.fromkeys(labels):  # first-seen order
        idx = np.flatnonzero(np.asarray([g == label for g in labels]))
        r, v = ref[idx], var[idx]
        k = min(TOP_K, len(idx))
        k10 = min(TOP_AGREEMENT_K, len(idx))
        diff = np.abs(v - r)
        score_range = float(np.ptp(r))
        per_query[label] = {
            "pairs": len(idx),
            "spearman": spearman(r, v),
            "top3_kept": _top(r, k) == _top(v, k),
            "top3_set_kept": set(_top(r, k)) == set(_top(v, k)),
            "top10_agreement": len(set(_top(r, k10)) & set(_top(v, k10))) / k10,
            "max_abs_diff": float(diff.max()),
            "score_range": score_range,
            "max_rel_diff": float(diff.max() / score_range)
            if score_range > 0
            else float("inf") * float(diff.max() > 0),
        }
    values = list(per_query.values())
    return {
        "pairs": len(ref),
        "queries": len(per_query),
        "min_spearman": min(q["spearman"] for q in values),
        "all_top3_kept": all(q["top3_kept"] for q in values),
        "queries_top3_changed": [name for name, q in per_query.items() if not q["top3_kept"]],
        "queries_top3_set_changed": [name for name, q in per_query.items() if not q["top3_set_kept"]],
        "min_top10_agreement": min(q["top10_agreement"] for q in values),
        "max_abs_diff": max(q["max_abs_diff"] for q in values),
        "max_rel_diff": max(q["max_rel_diff"] for q in values),
        "thresholds": {"min_spearman": MIN_SPEARMAN, "top_k_kept": TOP_K, "max_abs_diff": MAX_ABS_DIFF},
        "per_query": per_query,
    }


def passes(report: dict) -> bool:
    """Every query keeps Spearman >= 0.99 and its top 3, and max |Δ logit| <= 0.05."""
    return bool(
        report["min_spearman"] >= MIN_SPEARMAN and report["all_top3_kept"] and report["max_abs_diff"] <= MAX_ABS_DIFF
    )


def summary(report: dict) -> str:
    """One line: the figures the gate decides on."""
    return (
        f"min Spearman {report['min_spearman']:.4f}, top-3 {'kept' if report['all_top3_kept'] else 'CHANGED'}"
        f", min top-10 agreement {report['min_top10_agreement']:.2f}, max |Δ| {report['max_abs_diff']:.4f}"
        f" ({report['max_rel_diff'] * 100:.1f}% of a query's range) -> {'PASS' if passes(report) else 'FAIL'}"
    )
