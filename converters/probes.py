"""Built-in probe pairs that every conversion is checked on.

They cover the seed example (GPUStack's and Jina's panda query), a document longer than most
models' window (the truncation path), and non-ASCII text in several scripts.
"""

from __future__ import annotations

PANDA_QUERY = "What is a panda?"
PANDA_DOCUMENTS = [
    "hi",
    "it is a bear",
    "The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply panda, "
    "is a bear species endemic to China.",
]

_LONG = (
    "The giant panda lives in a few mountain ranges in central China, mainly in Sichuan, but also in "
    "neighbouring Shaanxi and Gansu. As a result of farming, deforestation, and other development, the "
    "giant panda has been driven out of the lowland areas where it once lived. "
)

MULTILINGUAL = [
    ("熊猫吃什么？", "大熊猫主要以竹子为食，偶尔也吃小型动物。"),
    ("パンダはどこに住んでいますか", "ジャイアントパンダは中国の山岳地帯に生息しています。"),
    ("ما هو الباندا؟", "الباندا العملاق حيوان ثديي يعيش في الصين ويتغذى على الخيزران."),
    ("पांडा क्या खाता है?", "विशाल पांडा मुख्य रूप से बांस खाता है।"),
    ("Что ест панда?", "Большая панда питается в основном бамбуком. 🐼"),
    ("Où vit le panda géant ?", "Le panda géant vit dans les montagnes du centre de la Chine — Sichuan, Shaanxi."),
    ("판다는 무엇을 먹나요?", "자이언트 판다는 주로 대나무를 먹습니다."),
    ("Τι τρώει το πάντα;", "Το γιγάντιο πάντα τρώει κυρίως μπαμπού."),
]


def probe_pairs(max_length: int) -> list[tuple[str, str]]:
    """The probe set. The long document is sized past ``max_length`` (capped at ~1,500 words)."""
    pairs = [(PANDA_QUERY, d) for d in PANDA_DOCUMENTS]
    repeats = max(2, min(40, max_length // 40))
    pairs.append((PANDA_QUERY, _LONG * repeats))
    pairs.extend(MULTILINGUAL)
    pairs.append(("  odd\twhitespace  query ", "tabs\tand\nnewlines   and\u00a0nbsp"))
    return pairs
