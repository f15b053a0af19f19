r"""Study ``shakespeare.embedding_pca``: PCA of a char GPT's token embedding.

Runs our SVD-based PCA (`analysis.pca`) on the character model's token-embedding matrix $E$
(vocab × width): PCA of $E$ is the SVD of the centred $E - \mathbf{1}\mu^\top$, and the
covariance eigenvalues are $\sigma_i^2/(V-1)$. The PCA is an analysis of *a* trained model and is
cheap, while training is not: it reads the char model that ``shakespeare.char_vs_bpe`` saves
when it exists (``reuse_checkpoint``) and otherwise trains its own small one, so it runs alone.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scratchformer.analysis.pca import fit_pca
from scratchformer.data.lm_text import char_data
from scratchformer.experiments.kit import (
    CharGPTConfig,
    load_char_model,
    text_split,
    torch_threads,
    train_char_lm,
)
from scratchformer.experiments.registry import register
from scratchformer.viz.figures import new_figure, save_figure

CHECKPOINT = "char_model.pt"  # written by shakespeare.char_vs_bpe into its result folder


@dataclass
class Config(CharGPTConfig):
    """Quick profile: reuse char_vs_bpe's char model if saved, else train a small one here."""

    reuse_checkpoint: bool = True  # use results/<char_vs_bpe>/char_model.pt when present
    n_labels: int = 40  # most frequent characters labelled in the scatter
    steps: int = 150
    eval_every: int = 150
    eval_batches: int = 5
    val_chars: int = 5_000


PCA_NOTE = r"""# PCA of the token embedding and the singular values

Let $E \in \mathbb{{R}}^{{V \times d}}$ be the token-embedding matrix ({V} tokens, width {d}) and
$\mu$ its mean row. PCA centres, $E_c = E - \mathbf{{1}}\mu^\top$, and takes the SVD
$E_c = U\Sigma V^\top$: the principal directions are the right singular vectors, the coordinates
of token $i$ are row $i$ of $U\Sigma$, and the covariance $E_c^\top E_c/(V-1)$ has eigenvalues
$\lambda_i = \sigma_i^2/(V-1)$ — here the largest difference between the two computations is
{eig_gap:.1e} (relative). The spectra tracked during training (the GPT arithmetic study) are of
the *uncentred* $E$: its top singular value is {s_raw:.3f} against {s_c:.3f} after centring.
Centring removes exactly the mean: $\lVert E\rVert_F^2 = \lVert E_c\rVert_F^2 + V\lVert\mu\rVert^2$,
i.e. $\sum_i \sigma_i(E)^2 = \sum_i \sigma_i(E_c)^2 + V\lVert\mu\rVert^2$, here
{fro_raw:.4f} = {fro_c:.4f} + {mean_sq:.4f}.

The first two components explain {r2:.1%} of the variance, and {k90} of {d} components explain
90%. Source of the model: {source}.
"""


def char_frequencies(text: str) -> Counter[str]:
    """How often each character occurs in ``text``."""
    return Counter(text)


@register("shakespeare.embedding_pca", Config)
def run(cfg: Config, out: Path) -> dict:
    """PCA (our SVD-based one) of the char model's token embedding: scatter, variance curve."""
    ckpt = out.parent / "shakespeare.char_vs_bpe" / CHECKPOINT
    train, val = text_split(cfg)
    if cfg.reuse_checkpoint and ckpt.is_file():
        model, vocab = load_char_model(ckpt)
        source = f"checkpoint {ckpt}"
    else:
        data = char_data(train, val)
        with torch_threads(cfg.threads):
            model = train_char_lm(cfg, data).model
        vocab = "".join(data.token_text)
        source = f"trained here ({cfg.steps} steps, width {cfg.d_model})"
    emb = model.tok_emb.weight.detach().double().cpu()
    pca = fit_pca(emb)
    V, d = emb.shape
    s_raw = torch.linalg.svdvals(emb)
    cov_eig = torch.linalg.eigvalsh(torch.cov(emb.T)).flip(0)[:pca.n_components]
    eig_gap = float(((cov_eig - pca.explained_variance).abs()
                     / pca.explained_variance[0]).max())
    cum = torch.cumsum(pca.explained_variance_ratio, 0)
    k90 = int((cum < 0.9).sum()) + 1
    freq = char_frequencies(train)
    coords = pca.transform(emb)[:, :2].numpy()
    _plot_scatter(coords, vocab, freq, cfg.n_labels, out)
    _plot_variance(pca.explained_variance_ratio.numpy(), s_raw.numpy(),
                   pca.singular_values.numpy(), out)
    metrics = {
        "source": source,
        "vocab_size": V,
        "d_model": d,
        "explained_variance_ratio": pca.explained_variance_ratio.tolist(),
        "top2_ratio": float(cum[1]),
        "components_for_90pct": k90,
        "cov_eigen_vs_svd_max_rel_gap": eig_gap,
        "top_singular_value_uncentred": float(s_raw[0]),
        "top_singular_value_centred": float(pca.singular_values[0]),
        "mean_row_norm_times_sqrt_V": float(pca.mean.norm() * math.sqrt(V)),
        "frobenius_identity_gap": abs(float((s_raw**2).sum() - (pca.singular_values**2).sum()
                                            - V * pca.mean.square().sum())),
    }
    (out / "pca.md").write_text(PCA_NOTE.format(
        V=V, d=d, eig_gap=eig_gap, s_raw=metrics["top_singular_value_uncentred"],
        s_c=metrics["top_singular_value_centred"],
        fro_raw=float((s_raw**2).sum()), fro_c=float((pca.singular_values**2).sum()),
        mean_sq=V * float(pca.mean.square().sum()), r2=metrics["top2_ratio"], k90=k90,
        source=source), encoding="utf-8")
    return metrics


def _char_class(ch: str) -> str:
    if ch in "aeiouAEIOU":
        return "vowel"
    if ch.isalpha():
        return "upper consonant" if ch.isupper() else "lower consonant"
    if ch.isspace():
        return "whitespace"
    return "punctuation/digit"


def _plot_scatter(coords: np.ndarray, vocab: str, freq: Counter[str], n_labels: int,
                  out: Path) -> Path:
    """Tokens on the first two principal components, coloured by kind, frequent ones labelled."""
    fig, ax = new_figure(6.5, 5.5)
    classes = [_char_class(c) for c in vocab]
    for name in sorted(set(classes)):
        idx = [i for i, c in enumerate(classes) if c == name]
        ax.scatter(coords[idx, 0], coords[idx, 1], s=18, label=name)
    frequent = {c for c, _ in freq.most_common(n_labels)}
    for i, ch in enumerate(vocab):
        if ch in frequent:
            ax.annotate(repr(ch)[1:-1], coords[i], fontsize=8, xytext=(2, 2),
                        textcoords="offset points")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"token embeddings, {n_labels} most frequent labelled", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out / "embedding_pca.png")


def _plot_variance(ratio: np.ndarray, s_raw: np.ndarray, s_centred: np.ndarray,
                   out: Path) -> Path:
    """Explained-variance ratio and its cumulative sum; singular values with/without centring."""
    fig, (ax, ax_s) = new_figure(10.0, 3.6, ncols=2)
    k = np.arange(1, len(ratio) + 1)
    ax.bar(k, ratio, label="per component")
    ax.plot(k, np.cumsum(ratio), color="C1", marker=".", label="cumulative")
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.legend(fontsize=8)
    ax_s.semilogy(np.arange(1, len(s_raw) + 1), s_raw, marker=".", label="E (uncentred)")
    ax_s.semilogy(k, s_centred, marker=".", label="E - mean (PCA)")
    ax_s.set_xlabel("index")
    ax_s.set_ylabel("singular value")
    ax_s.legend(fontsize=8)
    return save_figure(fig, out / "embedding_variance.png")
