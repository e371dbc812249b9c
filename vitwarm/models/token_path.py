"""The token path: train a timm ViT's blocks on symbol sequences instead of images.

Procedural warm-up feeds a vision transformer sequences of grammar symbols (e.g. k-Dyck brackets) and
trains it to fill in masked symbols. The image side of the model is not used at all. `WarmupViT` wraps an
unchanged timm `VisionTransformer` and routes symbols around its patch embedding, step by step:

1. Symbols -> vectors. Each symbol id picks a row of a frozen random table of near-orthogonal vectors
   (``symbols``, vocab_size x embed_dim). It plays the part of the patch embedding: the blocks see one
   D-dimensional token per grid position, exactly as for an image.
2. Positions. The 1-D sequence of N = H x W symbols fills the ViT's token grid in raster order, so the
   ViT's own positional embedding applies unchanged (``pos_embed="frozen"``, the default). timm's
   ``_pos_embed`` adds it and prepends the prefix tokens (class / distillation / register tokens), handling
   ``no_embed_class``, ``class_token=False`` and ``dynamic_img_size`` itself. A shorter sequence
   (``seq_len`` L < N) takes the grid's first L positions in raster order (the top rows, left to right):
   it is padded to the grid for ``_pos_embed`` and cut back to the prefix and its L tokens before the
   blocks, so the blocks pay for L tokens only.
3. Blocks. ``norm_pre``, the blocks and the final norm run exactly as in ``forward_features``. timm's
   attention has no causal mask, so every position sees the whole sequence (bidirectional, like BERT).
4. Symbols out. The prefix tokens are dropped and a linear head predicts a symbol at each of the N grid
   positions; the loss (`masked_token_loss`) counts only the masked positions.

Afterwards the caller transfers the blocks out of ``warm.vit`` (see `vitwarm.models.transfer`); the
symbol table and the symbol head are discarded.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer

from .transfer import PREFIX_TOKENS, param_part

POS_EMBED_MODES = ("frozen", "random", "learned")
TRAINABLE = ("blocks", "attn", "mlp", "norm", "cls_token", "head")


def _trainable_in_vit(name: str, trainable: tuple[str, ...]) -> bool:
    """Whether the ViT parameter ``name`` is trained under the ``trainable`` selection."""
    top = name.split(".")[0]
    if top == "blocks" and "blocks" in trainable:
        return True
    if top in PREFIX_TOKENS:
        return "cls_token" in trainable
    part = param_part(name)
    # attn / mlp only exist inside blocks; norm also covers norm_pre and the final norm / fc_norm.
    return part is not None and part in trainable


def near_orthogonal(rows: int, dim: int, norm: float, generator: torch.Generator) -> torch.Tensor:
    """A (rows, dim) matrix whose rows have length ``norm`` and are as close to orthogonal as possible.

    Exactly orthogonal when rows <= dim (k-Dyck with k = 64 plus MASK is 129 rows, below ViT-T's 192).
    With more rows than dimensions the rows of a random orthogonal-column matrix are renormalised; their
    typical pairwise cosine is then about 1/sqrt(dim), as for independent random vectors.
    """
    table = torch.empty(rows, dim)
    nn.init.orthogonal_(table, generator=generator)
    return norm * F.normalize(table, dim=1)


class WarmupViT(nn.Module):
    """A timm ViT trained on symbol sequences: ``forward(tokens (B, L)) -> logits (B, L, vocab_size)``.

    Args:
        vit: any timm ``VisionTransformer`` (DeiT and other subclasses included); it is used in place, not
            copied, and exposed as ``.vit`` so the warmed-up blocks can be transferred from it.
        vocab_size: number of symbol ids, special ids such as MASK included.
        pos_embed: ``"frozen"`` the ViT's own pos_embed, frozen (default); ``"random"`` additionally a
            separate frozen near-orthogonal table at the symbol scale, added to the grid tokens while the
            ViT's own stays frozen; ``"learned"`` trains the ViT's own pos_embed (transfer it with
            ``keep_pos_embed=True``).
        trainable: what is trained, among ``TRAINABLE``: ``blocks`` (everything inside the blocks),
            ``attn`` / ``mlp`` (those branches of every block, with their layer scales), ``norm`` (block
            norms, ``norm_pre`` and the final ``norm`` / ``fc_norm``), ``cls_token`` (class, distillation
            and register tokens), ``head`` (the symbol head). Everything else has ``requires_grad=False``,
            in particular the patch embedding and the classifier head, which the warm-up never uses (DDP
            reduces only parameters that require grad, so unused trainable ones would make it fail).
        seed: seeds the symbol table, the random positional table and the symbol head.
        seq_len: tokens per sequence, at most the grid's N (None: N); a shorter one sits on the grid's first
            ``seq_len`` positions in raster order.
    """

    def __init__(
        self,
        vit: VisionTransformer,
        vocab_size: int,
        pos_embed: str = "frozen",
        trainable: tuple[str, ...] | list[str] = ("blocks", "norm", "head"),
        seed: int = 0,
        seq_len: int | None = None,
    ):
        super().__init__()
        trainable = tuple(trainable)
        unknown = [t for t in trainable if t not in TRAINABLE]
        if unknown:
            raise ValueError(f"unknown trainable names {unknown}; valid names: {', '.join(TRAINABLE)}")
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed must be one of {', '.join(POS_EMBED_MODES)}; got {pos_embed!r}")
        if vit.pos_embed is None and pos_embed != "random":
            raise ValueError(f"this ViT has no pos_embed; pos_embed={pos_embed!r} needs one, use 'random'")
        if getattr(vit.patch_drop, "prob", 0.0) > 0:
            raise ValueError("patch dropout would drop positions whose symbols must be predicted; "
                             "build the ViT with patch_drop_rate=0 for the warm-up")
        self.vit = vit
        self.vocab_size = vocab_size
        self.grid_size = tuple(vit.patch_embed.grid_size)
        self.num_tokens = vit.patch_embed.num_patches  # N = H * W
        self.seq_len = self.num_tokens if seq_len is None else seq_len
        if not 0 < self.seq_len <= self.num_tokens:
            raise ValueError(f"seq_len {seq_len} must be from 1 to the {self.grid_size[0]} x {self.grid_size[1]} "
                             f"= {self.num_tokens} tokens of the ViT's grid")
        dim = vit.embed_dim
        generator = torch.Generator().manual_seed(seed)

        # Scale: symbols and positions must be on an equal footing. Bracket matching depends on order,
        # and with bidirectional attention the order is visible only through the positional embedding.
        # Symbols at the scale of image patch tokens (about 30x the std of timm's pos_embed init) drown the
        # frozen positions: in a probe (k=4, 16 tokens, 1000 steps) that model stayed near 51% masked-token
        # accuracy, while at the pos_embed scale it reached 95%. So every symbol entry gets the RMS of the
        # ViT's pos_embed entries (0.02 at timm's init; 0.02 as well for a ViT without one), the way
        # BERT-style models initialise token and position embeddings alike.
        like = vit.patch_embed.proj.weight
        pos = vit.pos_embed
        # A ViT on the meta device (the preflight's dry build) has shapes but no values to measure.
        measurable = pos is not None and not pos.is_meta
        entry_rms = pos.detach().float().pow(2).mean().sqrt().item() if measurable else 0.02
        token_norm = entry_rms * dim**0.5
        self.register_buffer("symbols", near_orthogonal(vocab_size, dim, token_norm, generator).to(like))
        random_pos = near_orthogonal(self.num_tokens, dim, token_norm, generator).unsqueeze(0)  # (1, N, D)
        self.register_buffer("random_pos", random_pos.to(like) if pos_embed == "random" else None)
        self.head = nn.Linear(dim, vocab_size)
        nn.init.trunc_normal_(self.head.weight, std=0.02, generator=generator)
        nn.init.zeros_(self.head.bias)
        self.head.to(like)

        for name, param in vit.named_parameters():
            param.requires_grad_(_trainable_in_vit(name, trainable))
        if vit.pos_embed is not None:
            vit.pos_embed.requires_grad_(pos_embed == "learned")
        self.head.requires_grad_("head" in trainable)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, L = tokens.shape
        if self.seq_len != L:
            H, W = self.grid_size
            raise ValueError(f"sequence length {L} does not match the warm-up's {self.seq_len} tokens "
                             f"(the ViT's token grid: {H} x {W} = {self.num_tokens} tokens)")
        vit = self.vit
        x = F.embedding(tokens, self.symbols)  # (B, L, D): symbols in place of patch embeddings
        if self.random_pos is not None:
            x = x + self.random_pos[:, :L]  # (B, L, D)
        if self.num_tokens > L:  # padded to the grid for _pos_embed, which knows the model's prefix layout
            x = F.pad(x, (0, 0, 0, self.num_tokens - L))  # (B, N, D)
        if vit.dynamic_img_size:
            x = x.view(B, *self.grid_size, -1)  # (B, H, W, D): the layout _pos_embed expects then
        x = vit._pos_embed(x)[:, :vit.num_prefix_tokens + L]  # (B, P + L, D), P = vit.num_prefix_tokens
        x = vit.patch_drop(x)  # identity (checked in __init__), kept so the stages match forward_features
        x = vit.norm_pre(x)
        if vit.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(vit.blocks, x)
        else:
            x = vit.blocks(x)  # (B, P + L, D), bidirectional attention
        # Exactly one of norm / fc_norm is a real norm: fc_norm replaces norm when global_pool='avg'.
        # Both act per token, so applying both gives every token the model's final norm.
        x = vit.fc_norm(vit.norm(x))
        x = x[:, vit.num_prefix_tokens:]  # (B, L, D): drop class / distillation / register tokens
        return self.head(x)  # (B, L, vocab_size)


def masked_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy over masked positions only, and the masked-token accuracy as counts.

    logits (B, N, V), targets (B, N) int64, loss_mask (B, N) bool. Returns ``(loss, n_correct, n_masked)``;
    the counts are tensors so callers can all-reduce them before dividing. A batch without masked
    positions gives loss 0 (still connected to the graph) instead of NaN.
    """
    # No boolean indexing: its result's size depends on the data, which costs a host sync on a GPU.
    wanted = torch.where(loss_mask, targets, -100)  # (B, N); -100: cross_entropy's ignore_index
    n_masked = loss_mask.sum()
    loss = F.cross_entropy(logits.flatten(0, 1).float(), wanted.flatten(), reduction="sum") / n_masked.clamp(min=1)
    n_correct = (logits.detach().argmax(dim=-1) == wanted).sum()
    return loss, n_correct, n_masked
