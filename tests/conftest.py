"""Tiny offline models and tokenizers built in code, so the suite needs no network or data."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = ("the a an is was what who where when how why which of to in on for with by from and or "
         "not good bad great movie film story actor plot city country river name year number many "
         "much long first capital president invented wrote play song book game team water food "
         "animal color money day night love hate boring funny sad happy very quite really").split()


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", ","] + WORDS) + "\n")
    return path


@pytest.fixture(scope="session")
def tokenizer(vocab_file):
    return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)


def tiny_bert(num_labels=3, vocab_size=len(WORDS) + 8, dropout=0.0, layers=2, seed=0, attn="eager"):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        num_labels=num_labels)
    return BertForSequenceClassification._from_config(config, attn_implementation=attn)


@pytest.fixture
def model():
    return tiny_bert()


def encode(tokenizer, texts, pairs=None):
    return dict(tokenizer(texts, pairs, padding=True, return_special_tokens_mask=True, return_tensors="pt"))
