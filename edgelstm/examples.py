"""The worked examples of the articles edgelstm started from (../shared/seeds/), as
specs, each with the figure the article gives and what edgelstm counts.

Some of the articles' arithmetic is wrong; `note` says where and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .spec import DenseSpec, EmbeddingSpec, LSTMSpec, ModelSpec


@dataclass(frozen=True)
class Example:
    name: str
    source: str            # the seed article
    spec: object           # LSTMSpec or ModelSpec
    article_params: Optional[int]
    what: str
    note: str = ""


def _keras(E, H, **kw) -> LSTMSpec:
    return LSTMSpec(input_size=E, hidden_size=H, bias="keras", **kw)


EXAMPLES = {
    e.name: e for e in [
        Example("demystify", "000 (Demystifying LSTM weights and biases dimensions)",
                _keras(30, 10), 1640, "one LSTM, E=30, H=10, Keras (one bias)",
                "4 x (10x30 + 10x10 + 10) = 1,640."),
        Example("keras-640", "001 (zhihu: LSTM parameter count), 003 (cnblogs)",
                _keras(5, 10), 640, "keras.layers.LSTM(10) on 13 steps of 5 features"),
        Example("kws", "002 (LSTMs tutorial: a computational perspective)",
                _keras(80, 12), 4464, "keyword spotting: 80 MFCC features, 12 hidden units"),
        Example("sentiment", "004 (how to count LSTM parameters)",
                ModelSpec(stacks=(_keras(128, 64),), embedding=EmbeddingSpec(1000, 128),
                          head=DenseSpec(10, every_step=False)),
                178058, "Embedding(1000,128) + LSTM(64) + Dense(10)",
                "128,000 + 49,408 + 650 = 178,058."),
        Example("seq2seq", "001 (zhihu: LSTM parameter count)",
                ModelSpec(stacks=(_keras(500, 1000), _keras(500, 1000)),
                          embedding=EmbeddingSpec(50000, 500),
                          head=DenseSpec(50000, bias=False), topology="encoder_decoder"),
                91_000_000, "encoder/decoder, vocab 50,000, embedding 500, H=1000, output layer without bias",
                "The article's own formula (H(H+E)+H)x4 gives 6,004,000 per LSTM, not 8M, so "
                "the total is 25M + 2 x 6,004,000 + 50M = 87,008,000, not 91M "
                "(87,058,000 if the output layer has its 50,000 biases)."),
        Example("sample2", "002, sample network 2, question 4",
                ModelSpec(stacks=(_keras(4, 5), _keras(5, 4))), 288 + 160,
                "two stacked LSTMs: x is 4, LSTM0 gives 5, LSTM1 gives 4",
                "The article computes LSTM0 as 4*6*(5+4+1) = 288; with its own formula "
                "4*out*(in+out+1) it is 4*5*(4+5+1) = 200. LSTM1 = 160 is right. Total 360, not 448."),
        Example("sample3", "002, sample network 3, question 4",
                ModelSpec(stacks=(_keras(4, 5), _keras(5, 6))), 200 + 264,
                "two stacked LSTMs: x is 4, LSTM0 gives 5, LSTM1 gives 6",
                "LSTM0 = 200 is right; the second layer is 4*6*(5+6+1) = 288, not "
                "4*6*(5+5+1) = 264. Total 488, not 464."),
    ]
}


def get_example(name: str) -> Example:
    if name not in EXAMPLES:
        raise KeyError(f"example: expected one of {', '.join(EXAMPLES)}, got {name!r}")
    return EXAMPLES[name]
