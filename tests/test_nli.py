"""NLI: pair formatting, the last-token classifier, baselines, metrics, the study and its CLI."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from scratchformer.cli import main
from scratchformer.data.nli_pairs import (
    CLS,
    HYPOTHESIS,
    PAD,
    PREMISE,
    EncodedPairs,
    encode_pair,
    encode_pairs,
    format_pair,
    length_bucketed_batches,
    pad_batch,
    train_pair_tokenizer,
)
from scratchformer.data.snli import LABELS, NLIPair, SNLISplit
from scratchformer.experiments import nli
from scratchformer.experiments.registry import StudyError, get
from scratchformer.models.bow import BowLogisticRegression, MajorityClass, features
from scratchformer.models.gpt import GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.models.nli import classify, load_classifier, predict_proba
from scratchformer.tokenizers.bpe import BPETokenizer

NOUNS = ["dog", "cat", "man", "woman", "child", "bird", "horse", "girl", "boy", "car"]
VERBS = ["runs", "sleeps", "eats", "jumps", "sits", "plays", "walks", "swims"]


def _pairs(n: int, seed: int = 0) -> list[NLIPair]:
    """Synthetic pairs: entailment repeats the premise's noun, contradiction names another one
    and says "no", neutral adds "maybe"; every label is decided by the words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
        label = rng.choice(LABELS)
        other = rng.choice([w for w in NOUNS if w != noun])
        hyp = {"entailment": f"A {noun} {verb}.", "neutral": f"A {noun} maybe {verb} fast.",
               "contradiction": f"No {other} {verb}."}[label]
        out.append(NLIPair(f"The {noun} {verb} in the park.", hyp, label))
    return out


@pytest.fixture(scope="module")
def tok():
    sentences = sorted({s for p in _pairs(300) for s in (p.premise, p.hypothesis)})
    return train_pair_tokenizer(sentences, 300)


def test_pair_format_and_special_tokens(tok):
    sp = tok.special_tokens
    expected = f"{PREMISE} A man cooks. {HYPOTHESIS} Food. {CLS}"
    assert format_pair(" A man cooks. ", "Food.") == expected
    ids, cut = encode_pair(tok, "The dog runs.", "A dog runs.")
    assert not cut
    assert ids[0] == sp[PREMISE] and ids[-1] == sp[CLS] and ids.count(sp[HYPOTHESIS]) == 1
    h = ids.index(sp[HYPOTHESIS])
    assert tok.decode(ids[1:h]) == " The dog runs." and tok.decode(ids[h + 1:-1]) == " A dog runs."
    # A special-token string typed by a user stays plain text, not a control token.
    ids, _ = encode_pair(tok, f"A {CLS} here.", "x")
    assert ids.count(sp[CLS]) == 1


def test_only_the_premise_is_cut_to_fit(tok):
    full, _ = encode_pair(tok, "The dog runs in the park with the cat.", "A dog runs.")
    ids, cut = encode_pair(tok, "The dog runs in the park with the cat.", "A dog runs.",
                           max_len=len(full) - 2)
    assert cut and len(ids) == len(full) - 2 and ids[-6:] == full[-6:]
    with pytest.raises(ValueError, match="leaves no room for the premise"):
        encode_pair(tok, "The dog.", "A dog runs in the park.", max_len=5)
    with pytest.raises(ValueError, match="lacks the special token"):
        encode_pair(type(tok).train(["a dog"], 260), "a", "b")


def test_pad_batch_and_right_padding_leave_the_class_logits_unchanged(tok):
    rows = [encode_pair(tok, "The dog runs.", "A dog runs.")[0],
            encode_pair(tok, "The cat sleeps in the park.", "No dog sleeps.")[0]]
    x, lengths = pad_batch(rows, tok.special_tokens[PAD])
    assert x.shape == (2, max(map(len, rows))) and lengths.tolist() == [len(r) for r in rows]
    assert (x[0, len(rows[0]):] == tok.special_tokens[PAD]).all()
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig(vocab_size=tok.vocab_size, context_len=32, n_layers=2,
                                    n_heads=2, d_model=16), 3).eval()
    with torch.no_grad():
        batched = model(x, lengths)
        alone = model(torch.tensor([rows[0]]), torch.tensor([len(rows[0])]))
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="lengths must lie in"):
        model(x, torch.tensor([0, 3]))


def test_baselines_on_a_separable_task():
    train, test = _pairs(600, seed=1), _pairs(300, seed=2)
    xy = [(p.premise, p.hypothesis) for p in train]
    y = [p.label_id for p in train]
    gold = torch.tensor([p.label_id for p in test])
    xt = [(p.premise, p.hypothesis) for p in test]
    pair = BowLogisticRegression("pair", epochs=10).fit(xy, y)
    assert (pair.predict(xt) == gold).float().mean() > 0.95
    probs = pair.predict_proba(xt)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(xt)))
    maj = MajorityClass().fit([0, 2, 2, 1])
    assert maj.label == 2 and maj.predict(3).tolist() == [2, 2, 2]


def test_hypothesis_only_cannot_see_the_premise():
    # The label is whether the hypothesis noun is the premise's: invisible without the premise.
    rng = random.Random(0)
    rows, labels = [], []
    for _ in range(800):
        a, b = rng.sample(NOUNS, 2)
        same = rng.random() < 0.5
        rows.append((f"The {a} sits.", f"A {a if same else b} sits."))
        labels.append(0 if same else 2)
    train_x, test_x, train_y = rows[:600], rows[600:], labels[:600]
    gold = torch.tensor(labels[600:])
    hyp = BowLogisticRegression("hypothesis", epochs=10).fit(train_x, train_y)
    pair = BowLogisticRegression("pair", epochs=10).fit(train_x, train_y)
    assert (pair.predict(test_x) == gold).float().mean() > 0.95
    assert (hyp.predict(test_x) == gold).float().mean() < 0.7
    assert "in:dog" in features("The dog sits.", "A dog sits.", "pair")
    assert not any(f.startswith("p:") for f in features("The dog.", "A dog.", "hypothesis"))


def test_scores_by_hand():
    gold = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    s = nli.scores(pred, gold)
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert s["accuracy"] == pytest.approx(4 / 6)
    # F1: entailment p=1/2 r=1/2 -> 1/2; neutral p=2/3 r=1 -> 4/5; contradiction p=1 r=1/2 -> 2/3
    assert s["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_bucketed_batches_cover_each_epoch_once():
    lengths = [random.Random(i).randint(3, 40) for i in range(100)]
    batches = length_bucketed_batches(lengths, 8, 13, seed=0)  # 13 batches = one epoch
    assert len(batches) == 13 and sorted(i for b in batches for i in b) == list(range(100))


def test_variant_parsing():
    assert nli.parse_variant("dense:moe:scratch") == ("dense", "moe", "scratch")
    with pytest.raises(ValueError, match="attention:ffn:init"):
        nli.parse_variant("dense:sparse:scratch")


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("variants", "dense:sparse:scratch", "attention:ffn:init"),
    ("epochs", "0", "epochs"),
    ("min_steps", "1", "min_steps must be >= 2"),
    ("bpe_vocab", "100", "bpe_vocab must be >= 261"),
    ("head_dropout", "1.0", "head_dropout"),
    ("moe_top_k", "5", "moe_top_k must be <= moe_experts=4"),
    ("pretrain_context", "200", "pretrain_context must be <= context_len=128"),
    ("n_heads", "3", "divisible"),
    ("device", "gpu9", "device"),
])
def test_bad_config_fails_when_built(field, bad, message):
    with pytest.raises(StudyError, match=message):
        get("nli.snli").config("quick", {field: bad})


def test_data_file_is_relative_to_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(tmp_path))
    src = tmp_path / "snli_1.0" / "snli_1.0_train.jsonl"
    assert nli.data_file(str(src)) == "snli_1.0/snli_1.0_train.jsonl"
    archive = f"{tmp_path / 'snli_1.0' / 'snli_1.0.zip'}!snli_1.0/snli_1.0_train.jsonl"
    assert nli.data_file(archive) == "snli_1.0/snli_1.0.zip!snli_1.0/snli_1.0_train.jsonl"
    assert nli.data_file("elsewhere/train.jsonl") == "elsewhere/train.jsonl"


def _fake_snli(monkeypatch):
    splits = {"train": _pairs(240, 3), "dev": _pairs(60, 4), "test": _pairs(60, 5)}

    def load(split, **kwargs):
        pairs = splits[split]
        counts = {lab: sum(p.label == lab for p in pairs) for lab in LABELS}
        return SNLISplit(split, pairs, f"fake/{split}.jsonl", len(pairs) + 1, 1, counts)

    monkeypatch.setattr(nli, "load_snli", load)
    monkeypatch.setattr(nli, "load_tiny_shakespeare",
                        lambda **kw: "First Citizen:\nBefore we proceed any further.\n" * 40)


def test_tiny_study_run_and_cli(monkeypatch, tmp_path, capsys):
    _fake_snli(monkeypatch)
    cfg = dataclasses.replace(nli.Config(), train_size=0, eval_size=0, bpe_vocab=300,
                              context_len=32, d_model=16, n_layers=1, n_heads=2, min_steps=4,
                              epochs=0.1, pretrain_steps=3, pretrain_batch=4,
                              pretrain_context=16, baseline_epochs=2, curve_sizes=(50, 0),
                              latency_examples=2)
    out = tmp_path / "nli.snli"
    out.mkdir()
    m = nli.run(cfg, out)
    assert m["train_set"]["pairs_used"] == 240 and m["train_set"]["file"] == "fake/train.jsonl"
    assert m["train_set"]["dataset"] == "snli_1.0"
    assert set(m["models"]) == {"majority", "hypothesis_only_bow_lr", "pair_bow_lr",
                                "gpt[dense,dense]/scratch", "gpt[dense,dense]/pretrained"}
    for r in m["models"].values():
        assert sum(map(sum, r["confusion"])) == 60 and 0 <= r["macro_f1"] <= 1
    # The synthetic labels are decided by the hypothesis' words: both bag-of-words baselines
    # must beat the majority class (the GPTs train 4 steps here; see the test below for them).
    majority = m["models"]["majority"]
    for name in ("hypothesis_only_bow_lr", "pair_bow_lr"):
        assert m["models"][name]["accuracy"] > majority["accuracy"] + 0.3, name
        assert m["models"][name]["macro_f1"] > majority["macro_f1"] + 0.3, name
    gpt = m["models"]["gpt[dense,dense]/scratch"]
    assert gpt["parameters_active_per_token"] < gpt["parameters_total"]
    assert gpt["train"]["tokens_per_s"] > 0 and gpt["latency"]["batch_32_ms"] > 0
    assert m["learning_curve"]["sizes"] == [50, 240]
    points = {p["variant"]: p for p in m["tradeoff"]["points"]}
    assert set(points) == {"gpt[dense,dense]/scratch", "gpt[dense,dense]/pretrained"}
    assert points["gpt[dense,dense]/scratch"]["quality"] == gpt["accuracy"]
    assert (out / "confusion.png").is_file() and (out / "learning_curve.png").is_file()
    assert (out / "tokenizer.json").is_file()
    # The cached tokenizer is reused when the sentences and size are the same.
    stamp = (out / "tokenizer.json").stat().st_mtime_ns
    nli.load_data(cfg, out)
    assert (out / "tokenizer.json").stat().st_mtime_ns == stamp

    ckpt = out / nli.CHECKPOINT_DIR
    model, tok, extra = load_classifier(ckpt)
    assert extra["variant"] == m["summary"]["best_variant"]
    probs = classify(model, tok, "The dog runs in the park.", "A dog runs.")
    assert list(probs) == list(LABELS) and sum(probs.values()) == pytest.approx(1.0)
    capsys.readouterr()
    assert main(["nli", "The dog runs in the park.", "A dog runs.",
                 "--checkpoint", str(ckpt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == max(probs, key=probs.__getitem__)
    printed = {ln.split()[0]: float(ln.split()[1]) for ln in lines[1:]}
    assert printed == pytest.approx(probs, abs=1e-4)
    assert main(["nli", "", "A dog.", "--checkpoint", str(ckpt)]) == 2
    assert main(["nli", "a", "b", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "no NLI checkpoint" in capsys.readouterr().err


def test_trained_gpt_classifier_beats_the_majority_baseline(tok: BPETokenizer) -> None:
    """The study's training loop and a small GPT classifier, 60 steps on pairs whose label the
    words decide: on held-out pairs it beats the majority class in accuracy and macro-F1."""
    pad = tok.special_tokens[PAD]

    def encode(pairs: list[NLIPair]) -> EncodedPairs:
        """Token ids of the pairs, cut to 32 tokens, and their labels."""
        rows = [(p.premise, p.hypothesis) for p in pairs]
        return encode_pairs(tok, rows, [p.label_id for p in pairs], 32)

    train, test = encode(_pairs(400, seed=1)), encode(_pairs(200, seed=2))
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig(vocab_size=tok.vocab_size, context_len=32, n_layers=1,
                                    n_heads=2, d_model=32), 3, 0.0)
    cfg = dataclasses.replace(nli.Config(), epochs=0.01, min_steps=60, batch_size=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits on a shared machine
    try:
        model, info = nli.train_classifier(cfg, model, train, pad, 3e-3, None)
    finally:
        torch.set_num_threads(threads)
    assert info["steps"] == 60
    ours = nli.scores(predict_proba(model, test.ids, pad).argmax(-1), test.labels)
    majority_class = MajorityClass().fit(train.labels.tolist())
    majority = nli.scores(majority_class.predict(len(test)), test.labels)
    assert majority["accuracy"] < 0.4 and majority["macro_f1"] < 0.2  # three balanced classes
    assert ours["accuracy"] > majority["accuracy"] + 0.3
    assert ours["macro_f1"] > majority["macro_f1"] + 0.5

