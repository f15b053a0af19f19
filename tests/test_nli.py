"""NLI: pair formats, the word-level and GPT classifiers, baselines, metrics, the study, the
saved model and its CLI."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from scratchformer.cli import main
from scratchformer.data.nli_pairs import (
    CLS,
    HYPOTHESIS,
    PAD,
    PREMISE,
    WORD_SPECIALS,
    EncodedPairs,
    WordPairs,
    WordVocab,
    encode_pair,
    encode_pairs,
    encode_word_pairs,
    format_pair,
    length_bucketed_batches,
    pad_batch,
    pad_rows,
    train_pair_tokenizer,
    word_pair_batches,
)
from scratchformer.data.snli import LABELS, NLIPair, SNLISplit
from scratchformer.experiments import nli
from scratchformer.experiments.registry import StudyError, get
from scratchformer.models.bow import BowLogisticRegression, MajorityClass, features
from scratchformer.models.cross_attention import CrossAttentionConfig, CrossAttentionNLI
from scratchformer.models.gpt import GPTConfig
from scratchformer.models.gpt_classifier import GPTClassifier
from scratchformer.models.nli import (
    NLIClassifier,
    classify,
    default_model_dir,
    load_classifier,
    predict_proba,
    predict_word_pairs,
    read_pairs_jsonl,
    save_classifier,
)
from scratchformer.models.nli_encoder import (
    CLS_ID,
    SEP_ID,
    PairEncoderConfig,
    PairEncoderNLI,
    pack_pair,
)
from scratchformer.models.word_pair import WordPairConfig, match_flags
from scratchformer.tokenizers.bpe import BPETokenizer

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "docs" / "results" / "nli.snli"

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
    assert nli.parse_word_variant("cross_attention+swap") == ("cross_attention",
                                                              frozenset({"swap"}))
    for bad in ("cross", "pair_encoder+sparse", "cross_attention+swap+swap"):
        with pytest.raises(ValueError, match="arch\\[\\+option"):
            nli.parse_word_variant(bad)


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("variants", "dense:sparse:scratch", "attention:ffn:init"),
    ("word_variants", "cross", "word variant"),
    ("epochs", "0", "epochs"),
    ("word_epochs", "0", "word_epochs"),
    ("seeds", "0", "seeds must be >= 1"),
    ("label_smoothing", "1.0", "label_smoothing"),
    ("min_steps", "1", "min_steps must be >= 2"),
    ("bpe_vocab", "100", "bpe_vocab must be >= 261"),
    ("head_dropout", "1.0", "head_dropout"),
    ("moe_top_k", "5", "moe_top_k must be <= moe_experts=4"),
    ("pretrain_context", "200", "pretrain_context must be <= context_len=128"),
    ("n_heads", "3", "divisible"),
    ("word_heads", "3", "divisible"),
    ("device", "gpu9", "device"),
])
def test_bad_config_fails_when_built(field, bad, message):
    with pytest.raises(StudyError, match=message):
        get("nli.snli").config("quick", {field: bad})


def test_no_transformer_at_all_is_refused():
    with pytest.raises(StudyError, match="no transformer"):
        get("nli.snli").config("quick", {"variants": "", "word_variants": ""})


def test_data_file_is_relative_to_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(tmp_path))
    src = tmp_path / "snli_1.0" / "snli_1.0_train.jsonl"
    assert nli.data_file(str(src)) == "snli_1.0/snli_1.0_train.jsonl"
    archive = f"{tmp_path / 'snli_1.0' / 'snli_1.0.zip'}!snli_1.0/snli_1.0_train.jsonl"
    assert nli.data_file(archive) == "snli_1.0/snli_1.0.zip!snli_1.0/snli_1.0_train.jsonl"
    assert nli.data_file("elsewhere/train.jsonl") == "elsewhere/train.jsonl"


# ----------------------------------------------------------------------------- word level


def _vocab(n: int = 300) -> WordVocab:
    return WordVocab.build([s for p in _pairs(n) for s in (p.premise, p.hypothesis)],
                           oov_buckets=8)


def _word_data(vocab: WordVocab, pairs: list[NLIPair]) -> WordPairs:
    return encode_word_pairs(vocab, [(p.premise, p.hypothesis) for p in pairs],
                             [p.label_id for p in pairs], 16)


def test_word_vocab_encodes_saves_and_hashes_unseen_words(tmp_path):
    vocab = _vocab()
    assert tuple(vocab.words[:4]) == WORD_SPECIALS and vocab.pad_id == 0
    ids, cut = vocab.encode("The DOG runs!")
    assert not cut and [vocab.words[i] for i in ids] == ["the", "dog", "runs"]
    assert vocab.encode("?!")[0] == [1]  # no word at all: [UNK]
    assert vocab.encode("a b c d e", max_len=2) == (vocab.encode("a b")[0], True)
    # An unseen word lands in a stable bucket past the words, the same in every sentence.
    (zebra,) = vocab.encode("zebra")[0]
    assert len(vocab.words) <= zebra < vocab.vocab_size and vocab.encode("zebra")[0] == [zebra]
    assert WordVocab(vocab.words).encode("zebra")[0] == [1]  # no buckets: [UNK]
    path = vocab.save(tmp_path / "vocab.json")
    again = WordVocab.load(path)
    assert again.words == vocab.words and again.oov_buckets == 8
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(ValueError, match="not a scratchformer-word-vocab"):
        WordVocab.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read word vocabulary"):
        WordVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="starts with"):
        WordVocab(["dog", "cat"])


def test_word_pairs_swap_and_batches():
    vocab = _vocab()
    data = _word_data(vocab, _pairs(40))
    c = LABELS.index("contradiction")
    n_c = int((data.labels == c).sum())
    aug = data.with_swapped(c)
    assert len(aug) == len(data) + n_c and (aug.labels[len(data):] == c).all()
    first = next(i for i, y in enumerate(data.labels.tolist()) if y == c)
    assert aug.premises[len(data)] == data.hypotheses[first]
    assert aug.hypotheses[len(data)] == data.premises[first]
    p, h, y, n = word_pair_batches(data, 8, 3, seed=0)(0, 0, torch.Generator())
    assert p.shape[0] == h.shape[0] == y.shape[0] == 8 and n == int((p != 0).sum() + (h != 0).sum())


def test_match_flags_and_packing():
    p = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    h = torch.tensor([[7, 5, 0], [10, 11, 12]])
    assert match_flags(p, h).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0]]
    assert match_flags(h, p).tolist() == [[1, 1, 0], [0, 0, 0]]
    ids, seg, packed = pack_pair(p, h, CLS_ID, SEP_ID, (match_flags(p, h), match_flags(h, p)))
    assert ids.tolist() == [[CLS_ID, 5, 6, 7, SEP_ID, 7, 5, SEP_ID],
                            [CLS_ID, 8, 9, SEP_ID, 10, 11, 12, SEP_ID]]
    assert seg.tolist() == [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]]
    assert packed.tolist() == [[0, 1, 0, 1, 0, 1, 1, 0], [0] * 8]
    ids, seg, _ = pack_pair(torch.tensor([[5, 0]]), torch.tensor([[6, 7]]), CLS_ID, SEP_ID)
    assert ids.tolist() == [[CLS_ID, 5, SEP_ID, 6, 7, SEP_ID]]


@pytest.mark.parametrize("arch", ["cross", "encoder", "cross_moe"])
def test_word_models_ignore_padding(arch):
    torch.manual_seed(0)
    common = dict(vocab_size=50, d_model=16, n_heads=2, n_layers=1, max_len=12, dropout=0.0)
    if arch == "encoder":
        model = PairEncoderNLI(PairEncoderConfig(**common)).eval()
    else:
        model = CrossAttentionNLI(CrossAttentionConfig(
            **common, compose_layers=1, ffn="moe" if arch == "cross_moe" else "dense")).eval()
    prem = [[5, 6, 7, 8, 9], [10, 11]]
    hyp = [[7, 5], [12, 13, 14, 15]]
    with torch.no_grad():
        batched = model(pad_rows(prem), pad_rows(hyp))
        alone = [model(torch.tensor([p]), torch.tensor([h]))
                 for p, h in zip(prem, hyp, strict=True)]
    assert batched.shape == (2, 3)
    torch.testing.assert_close(batched, torch.cat(alone), atol=1e-5, rtol=1e-5)
    assert 0 < model.active_parameters() <= model.num_parameters()
    with pytest.raises(ValueError, match="at least one non-padding id"):
        model(torch.tensor([[0, 0]]), torch.tensor([[5]]))
    with pytest.raises(ValueError, match="length must be in"):
        model(torch.ones(1, 13, dtype=torch.long), torch.ones(1, 2, dtype=torch.long))


def test_word_config_bounds_and_keys():
    cfg = CrossAttentionConfig(vocab_size=100)
    stored = dataclasses.asdict(cfg)
    assert CrossAttentionConfig.from_dict(stored) == cfg
    with pytest.raises(ValueError, match="missing key"):
        CrossAttentionConfig.from_dict({k: v for k, v in stored.items() if k != "d_model"})
    with pytest.raises(ValueError, match="unknown key"):
        CrossAttentionConfig.from_dict({**stored, "colour": "red"})
    with pytest.raises(ValueError, match="vocab_size must be <= 1000000"):
        CrossAttentionConfig.from_dict({**stored, "vocab_size": 10**12})
    with pytest.raises(ValueError, match="exceeds"):
        WordPairConfig(vocab_size=900_000, d_model=2048, n_heads=4)
    with pytest.raises(TypeError, match="d_model must be an int"):
        WordPairConfig(vocab_size=100, d_model=64.0)


def test_word_pair_baseline_learns_cross_features():
    # The label is decided by which premise noun meets which hypothesis noun: a cross feature.
    rng = random.Random(0)
    rows, labels = [], []
    for _ in range(900):
        a, b = rng.choice(NOUNS[:4]), rng.choice(NOUNS[:4])
        rows.append((f"The {a} sits.", f"A {b} sits."))
        labels.append(0 if (NOUNS.index(a) + NOUNS.index(b)) % 2 else 2)
    assert "x:dog|cat" in features("The dog sits.", "A cat sits.", "word_pair")
    wp = BowLogisticRegression("word_pair", epochs=15, min_count=1).fit(rows[:600], labels[:600])
    pair = BowLogisticRegression("pair", epochs=15, min_count=1).fit(rows[:600], labels[:600])
    gold = torch.tensor(labels[600:])
    assert (wp.predict(rows[600:]) == gold).float().mean() > 0.95
    assert (pair.predict(rows[600:]) == gold).float().mean() < 0.8
    capped = BowLogisticRegression("word_pair", epochs=1, max_features=5).fit(rows, labels)
    assert len(capped.vocab) == 5


def test_trained_cross_attention_model_beats_the_majority_baseline():
    """The study's word-model training (dev selection included), 80 steps on pairs whose label
    the words decide: on held-out pairs it beats the majority class."""
    vocab = _vocab()
    train, dev, test = (_word_data(vocab, _pairs(n, seed=s)) for n, s in
                        ((400, 1), (100, 2), (200, 3)))
    cfg = dataclasses.replace(nli.Config(), word_d_model=32, word_epochs=0.01, min_steps=80,
                              word_batch=32, word_lr=3e-3, evals_per_epoch=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, info = nli.train_word_model(cfg, "cross_attention+swap", vocab.vocab_size,
                                           train, dev, 0, None)
    finally:
        torch.set_num_threads(threads)
    assert info["steps"] == 80 and info["train_pairs"] > len(train)
    assert info["best_step"] in [s for s, _ in info["dev_curve"]]
    probs = predict_word_pairs(model, test.premises, test.hypotheses)
    ours = nli.scores(probs.argmax(-1), test.labels)
    assert ours["accuracy"] > 0.7


def _fake_snli(monkeypatch):
    splits = {"train": _pairs(240, 3), "dev": _pairs(60, 4), "test": _pairs(60, 5)}

    def load(split, **kwargs):
        pairs = splits[split]
        counts = {lab: sum(p.label == lab for p in pairs) for lab in LABELS}
        return SNLISplit(split, pairs, f"fake/{split}.jsonl", len(pairs) + 1, 1, counts)

    monkeypatch.setattr(nli, "load_snli", load)
    monkeypatch.setattr(nli, "load_tiny_shakespeare",
                        lambda **kw: "First Citizen:\nBefore we proceed any further.\n" * 40)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The study run once on synthetic splits with tiny models (two seeds)."""
    mp = pytest.MonkeyPatch()
    _fake_snli(mp)
    cfg = dataclasses.replace(
        nli.Config(), train_size=0, eval_size=0, bpe_vocab=300, context_len=32, d_model=16,
        n_layers=1, n_heads=2, min_steps=4, epochs=0.1, pretrain_steps=3, pretrain_batch=4,
        pretrain_context=16, baseline_epochs=2, curve_sizes=(50, 0), latency_examples=2,
        word_d_model=16, word_heads=2, word_epochs=0.5, evals_per_epoch=1,
        variants=("dense:dense:scratch", "dense:dense:pretrained"),
        word_variants=("cross_attention", "cross_attention+swap", "pair_encoder+moe"))
    out = tmp_path_factory.mktemp("nli") / "nli.snli"
    out.mkdir()
    try:
        yield cfg, out, nli.run(cfg, out)
    finally:
        mp.undo()


def test_tiny_study_run(tiny_run):
    cfg, out, m = tiny_run
    assert m["train_set"]["pairs_used"] == 240 and m["train_set"]["file"] == "fake/train.jsonl"
    assert m["train_set"]["dataset"] == "snli_1.0"
    words = {"cross_attention", "cross_attention+swap", "pair_encoder+moe"}
    gpts = {"gpt[dense,dense]/scratch", "gpt[dense,dense]/pretrained"}
    best = m["summary"]["best_variant"]
    ensembled = best in words and not best.endswith("+moe")  # a row of more than one seed
    assert set(m["models"]) == {"majority", *nli.BASELINES, *words, *gpts,
                                *([f"{best}/ensemble"] if ensembled else [])}
    for r in m["models"].values():
        assert sum(map(sum, r["confusion"])) == 60 and 0 <= r["macro_f1"] <= 1
        assert 0 <= r["dev_accuracy"] <= 1
    for name in (*nli.BASELINES, *words):
        r = m["models"][name]
        seeds = [0] if name.endswith("+moe") else [0, 1]  # moe_seeds=1: one seed
        assert r["seeds"] == seeds and len(r["per_seed"]) == len(seeds)
        assert r["accuracy"] == pytest.approx(sum(r["accuracy_seeds"]) / len(seeds))
    # The synthetic labels are decided by the hypothesis' words: every bag-of-words baseline
    # must beat the majority class.
    majority = m["models"]["majority"]
    for name in nli.BASELINES:
        assert m["models"][name]["accuracy"] > majority["accuracy"] + 0.3, name
    # The best variant is the one with the best mean dev accuracy, and its best-dev seed ships.
    transformers = [n for n, r in m["models"].items() if r["kind"] == "transformer"]
    assert best == max(transformers, key=lambda n: m["models"][n]["dev_accuracy"])
    shipped = m["shipped_model"]
    assert shipped["variant"] == best and shipped["dev_accuracy"] == max(
        m["models"][best]["dev_accuracy_seeds"])
    assert shipped["example"]["label"] in LABELS and shipped["bytes"] > 0
    moe = m["models"]["pair_encoder+moe"]
    assert moe["parameters_active_per_token"] < moe["parameters_total"]
    assert moe["train"]["tokens_per_s"] > 0 and moe["latency"]["batch_32_ms"] > 0
    assert set(m["summary"]["swap_augmentation"]) == {"cross_attention+swap"}
    curve = m["learning_curve"]
    assert curve["sizes"] == [50, 240] and len(curve[best]) == len(curve[curve["baseline"]]) == 2
    assert curve[best][-1] == m["models"][best]["accuracy_seeds"][0]
    points = {p["variant"] for p in m["tradeoff"]["points"]}
    assert points == words | gpts
    for f in ("confusion.png", "learning_curve.png", "accuracy.png", "table.md"):
        assert (out / f).is_file(), f
    # The cached BPE tokenizer is reused when the sentences and size are the same.
    stamp = (out / nli.BPE_FILE).stat().st_mtime_ns
    mp = pytest.MonkeyPatch()
    _fake_snli(mp)
    try:
        nli.load_data(cfg, out)
    finally:
        mp.undo()
    assert (out / nli.BPE_FILE).stat().st_mtime_ns == stamp


def test_tiny_study_model_and_cli(tiny_run, tmp_path, capsys):
    _, out, m = tiny_run
    ckpt = out / nli.MODEL_DIR
    clf = load_classifier(ckpt)
    assert clf.extra["variant"] == m["summary"]["best_variant"]
    probs = clf.classify("The dog runs in the park.", "A dog runs.")
    assert list(probs) == list(LABELS) and sum(probs.values()) == pytest.approx(1.0)
    assert classify(clf, premise="The dog runs in the park.", hypothesis="A dog runs.") == probs
    capsys.readouterr()
    assert main(["nli", "The dog runs in the park.", "A dog runs.",
                 "--checkpoint", str(ckpt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == max(probs, key=probs.__getitem__)
    printed = {ln.split()[0]: float(ln.split()[1]) for ln in lines[1:]}
    assert printed == pytest.approx(probs, abs=1e-3)  # float16 weights: close, not equal


# ----------------------------------------------------------------------------- saved model + CLI


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny untrained cross-attention model saved with its vocabulary."""
    vocab = _vocab()
    torch.manual_seed(0)
    model = CrossAttentionNLI(CrossAttentionConfig(vocab_size=vocab.vocab_size, d_model=16,
                                                   n_heads=2, max_len=16))
    path = tmp_path_factory.mktemp("model") / "model"
    save_classifier(model, vocab, path, {"variant": "cross_attention"})
    return path, model, vocab


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_saved_model_round_trip(saved, tmp_path):
    path, model, vocab = saved
    clf = load_classifier(path)
    assert clf.arch == "cross_attention" and clf.extra["variant"] == "cross_attention"
    pairs = [("The dog runs.", "A dog runs."), ("The cat sleeps in the park.", "No zebra.")]
    p = [vocab.encode(a, 16)[0] for a, _ in pairs]
    h = [vocab.encode(b, 16)[0] for _, b in pairs]
    torch.testing.assert_close(clf.predict_proba(pairs), predict_word_pairs(model, p, h))
    with pytest.raises(ValueError, match="pair 1: hypothesis must be a non-empty string"):
        clf.predict_proba([("a", "b"), ("a", " ")])
    # float16 weights: the same predictions up to rounding, half the bytes.
    half = save_classifier(model, vocab, tmp_path / "half", half=True)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (
        path / "model.safetensors").stat().st_size
    torch.testing.assert_close(load_classifier(half).predict_proba(pairs),
                               clf.predict_proba(pairs), atol=2e-3, rtol=0)
    with pytest.raises(TypeError, match="needs a BPE tokenizer"):
        save_classifier(GPTClassifier(GPTConfig(vocab_size=300, context_len=8, n_layers=1,
                                                n_heads=1, d_model=8), 3), vocab, tmp_path / "g")


def test_default_model_is_the_published_one_in_the_repository(saved, tmp_path, monkeypatch,
                                                               capsys):
    assert default_model_dir() == PUBLISHED / "model"
    path, _, _ = saved
    import scratchformer.models.nli as nli_models

    monkeypatch.setattr(nli_models, "default_model_dir", lambda: path)
    capsys.readouterr()
    assert main(["nli", "The dog runs.", "A dog runs."]) == 0  # no --checkpoint: the default
    expected = load_classifier(path).classify("The dog runs.", "A dog runs.")
    assert capsys.readouterr().out.splitlines()[0] == max(expected, key=expected.__getitem__)
    monkeypatch.setattr(nli_models, "default_model_dir", lambda: tmp_path / "gone")
    _one_line_error(capsys, ["nli", "a", "b"], "no NLI model at")


def test_cli_single_pair_and_batch_mode(saved, tmp_path, capsys):
    path, _, _ = saved
    clf = load_classifier(path)
    rows = [{"sentence1": "The dog runs.", "sentence2": "A dog runs.", "gold_label": "entailment",
             "pairID": "a"},
            {"sentence1": "The cat sleeps.", "sentence2": "No cat sleeps.",
             "gold_label": "contradiction", "pairID": "b"},
            {"sentence1": "The boy eats.", "sentence2": "A boy eats fast.", "gold_label": "-"}]
    pairs = _jsonl(tmp_path / "pairs.jsonl", rows)
    capsys.readouterr()
    assert main(["nli", "--input", str(pairs), "--output", str(tmp_path / "o" / "p.jsonl"),
                 "--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    preds = [json.loads(line) for line in (tmp_path / "o" / "p.jsonl").read_text().splitlines()]
    expected = clf.predict_proba([(r["sentence1"], r["sentence2"]) for r in rows]).argmax(-1)
    assert [p["prediction"] for p in preds] == [LABELS[k] for k in expected.tolist()]
    assert [p["pairID"] for p in preds] == ["a", "b", None] and preds[2]["gold_label"] is None
    right = sum(p["prediction"] == r["gold_label"] for p, r in zip(preds, rows[:2], strict=False))
    assert f"accuracy {right / 2:.4f} ({right}/2 pairs with a gold label)" in out
    assert "confusion (rows: gold, columns: predicted)" in out
    table = out.splitlines()[-3:]
    assert [ln.split()[0] for ln in table] == list(LABELS)
    assert sum(int(x) for ln in table for x in ln.split()[1:]) == 2
    # Without gold labels: predictions only.
    _jsonl(pairs, [{"sentence1": "The dog runs.", "sentence2": "A dog runs."}])
    assert main(["nli", "--input", str(pairs), "--checkpoint", str(path)]) == 0
    assert "no gold labels to score" in capsys.readouterr().out
    assert read_pairs_jsonl(pairs)[0].gold is None


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and err.startswith("scratchformer: error: "), err
    assert match in err, err


def test_cli_usage_errors(saved, tmp_path, capsys):
    path, _, _ = saved
    ck = ["--checkpoint", str(path)]
    pairs = _jsonl(tmp_path / "p.jsonl", [{"sentence1": "a", "sentence2": "b"}])
    _one_line_error(capsys, ["nli", *ck], "give PREMISE HYPOTHESIS, or --input")
    _one_line_error(capsys, ["nli", "a", "b", "--input", str(pairs), *ck], "not both")
    _one_line_error(capsys, ["nli", "a", *ck], "give both PREMISE and HYPOTHESIS")
    _one_line_error(capsys, ["nli", "a", "b", "--output", "x.jsonl", *ck], "--output needs")
    _one_line_error(capsys, ["nli", "", "A dog.", *ck], "premise must be a non-empty string")
    _one_line_error(capsys, ["nli", "--input", str(tmp_path / "none.jsonl"), *ck],
                    "no such file")
    (tmp_path / "bad.jsonl").write_text('{"sentence1": "a", "sentence2": "b"}\n{oops\n')
    _one_line_error(capsys, ["nli", "--input", str(tmp_path / "bad.jsonl"), *ck],
                    "bad.jsonl, line 2: not JSON")
    _jsonl(tmp_path / "bad.jsonl", [{"sentence1": "a"}])
    _one_line_error(capsys, ["nli", "--input", str(tmp_path / "bad.jsonl"), *ck],
                    "line 1: needs non-empty strings sentence1 and sentence2")


def _copy(path: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in path.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_cli_missing_or_damaged_model_is_one_line(saved, tmp_path, capsys):
    path, _, _ = saved
    _one_line_error(capsys, ["nli", "a", "b", "--checkpoint", str(tmp_path / "none")],
                    "no NLI model at")
    # Truncated weights.
    bad = _copy(path, tmp_path / "truncated")
    weights = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    _one_line_error(capsys, ["nli", "a", "b", "--checkpoint", str(bad)], "model.safetensors")
    # Configs that must fail before a model is built: absurd size, missing key, unknown arch.
    for name, edit, match in (
            ("huge", lambda c: c["model"].update(vocab_size=10**12), "vocab_size must be <="),
            ("nokey", lambda c: c["model"].pop("d_model"), "missing key(s) ['d_model']"),
            ("arch", lambda c: c.update(arch="lstm"), "config.arch must be one of"),
            ("wide", lambda c: c["model"].update(d_model=2048, n_heads=2, vocab_size=900_000),
             "exceeds")):
        bad = _copy(path, tmp_path / name)
        meta = json.loads((bad / "state.json").read_text())
        edit(meta["config"])
        (bad / "state.json").write_text(json.dumps(meta))
        _one_line_error(capsys, ["nli", "a", "b", "--checkpoint", str(bad)], match)
    # A vocabulary that does not match the model, and one that is not JSON.
    bad = _copy(path, tmp_path / "vocab")
    (bad / "tokenizer.json").write_text(json.dumps(
        {"format": "scratchformer-word-vocab", "oov_buckets": 0, "words": list(WORD_SPECIALS)}))
    _one_line_error(capsys, ["nli", "a", "b", "--checkpoint", str(bad)], "tokenizer has 4 ids")
    (bad / "tokenizer.json").write_text("{")
    _one_line_error(capsys, ["nli", "a", "b", "--checkpoint", str(bad)], "cannot read word")


def test_gpt_classifier_saves_and_loads(tok, tmp_path):
    torch.manual_seed(0)
    model = GPTClassifier(GPTConfig(vocab_size=tok.vocab_size, context_len=32, n_layers=1,
                                    n_heads=2, d_model=16), 3)
    path = save_classifier(model, tok, tmp_path / "gpt")
    clf = load_classifier(path)
    assert clf.arch == "gpt" and isinstance(clf, NLIClassifier)
    ids, _ = encode_pair(tok, "The dog runs.", "A dog runs.")
    expected = predict_proba(model, [ids], tok.special_tokens[PAD])[0]
    assert list(clf.classify("The dog runs.", "A dog runs.").values()) == pytest.approx(
        expected.tolist())
    with pytest.raises(ValueError, match="pair 0: hypothesis of"):
        clf.predict_proba([("a", "dog " * 40)])
    meta = json.loads((path / "state.json").read_text())
    meta["config"]["model"]["context_len"] = 10**9
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="context_len must be an int in"):
        load_classifier(path)


@pytest.mark.skipif(not (PUBLISHED / "model").is_dir(), reason="no published model")
def test_published_model_matches_its_record():
    """The shipped model loads with its checks, and says about the example pair what the
    published record says it does."""
    clf = load_classifier(PUBLISHED / "model")
    record = json.loads((PUBLISHED / "metrics.json").read_text())["metrics"]["shipped_model"]
    assert clf.extra["variant"] == record["variant"]
    example = record["example"]
    probs = clf.classify(example["premise"], example["hypothesis"])
    assert max(probs, key=probs.__getitem__) == example["label"]
    assert probs == pytest.approx(example["probabilities"], abs=1e-4)
    size = sum(f.stat().st_size for f in (PUBLISHED / "model").iterdir())
    assert size < 5_000_000


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
