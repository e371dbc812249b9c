"""The token path: shapes on several ViT variants, what trains and what stays frozen, the loss, learning."""

import pytest
import timm
import torch
import torch.nn.functional as F

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.models import TRAINABLE, WarmupViT, masked_token_loss
from vitwarm.procedural import ProceduralTask

torch.set_num_threads(1)

SMALL = dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2.0)

# Five ViT layouts, each with a 4 x 4 grid = 16 tokens.
VARIANTS = {
    "class_token": lambda: timm.create_model("vitwarm_pico_patch4_32", img_size=16, **SMALL),
    "avg_pool_no_cls": lambda: timm.create_model(
        "vitwarm_pico_patch4_32", img_size=16, class_token=False, global_pool="avg", **SMALL
    ),
    "reg_tokens": lambda: timm.create_model("vitwarm_pico_patch4_32", img_size=16, reg_tokens=4, **SMALL),
    "no_embed_class_dynamic": lambda: timm.create_model(
        "vitwarm_pico_patch4_32", img_size=16, no_embed_class=True, dynamic_img_size=True, **SMALL
    ),
    "deit_distilled": lambda: timm.create_model(
        "deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, **SMALL
    ),
}


def batch(task: ProceduralTask, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = task.batch(start, n, seed=0)
    return torch.from_numpy(b["tokens"]), torch.from_numpy(b["targets"]), torch.from_numpy(b["loss_mask"])


def train(warm: WarmupViT, task: ProceduralTask, steps: int, batch_size: int, lr: float) -> None:
    params = [p for p in warm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    warm.train()
    for step in range(steps):
        tokens, targets, loss_mask = batch(task, step * batch_size, batch_size)
        loss, _, _ = masked_token_loss(warm(tokens), targets, loss_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(warm: WarmupViT, task: ProceduralTask, n: int) -> float:
    warm.eval()
    tokens, targets, loss_mask = batch(task, 10**6, n)  # samples far from the training ones
    _, n_correct, n_masked = masked_token_loss(warm(tokens), targets, loss_mask)
    return (n_correct / n_masked).item()


@pytest.fixture(scope="module")
def task() -> ProceduralTask:
    return ProceduralTask("k_dyck", seq_len=16, params={"k": 4}, mask_ratio=0.5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_train_only_what_is_selected(variant, task):
    torch.manual_seed(0)
    warm = WarmupViT(VARIANTS[variant](), task.vocab_size)
    tokens, _, _ = batch(task, 0, 3)
    assert warm(tokens).shape == (3, 16, task.vocab_size)

    before = {n: t.clone() for n, t in warm.state_dict().items()}
    trained = {n for n, p in warm.named_parameters() if p.requires_grad}
    # Default: blocks, norms and the symbol head train; patch embedding, classifier head(s),
    # pos_embed and prefix tokens are frozen, so DDP never waits for gradients they cannot get.
    assert any(n.startswith("vit.blocks.") for n in trained) and "head.weight" in trained
    assert not any(n.split(".")[1] in ("patch_embed", "head", "head_dist", "pos_embed", "cls_token",
                                       "reg_token", "dist_token") for n in trained if n.startswith("vit."))
    train(warm, task, steps=3, batch_size=8, lr=1e-3)
    for name, value in warm.state_dict().items():
        if name in trained:
            assert not torch.equal(value, before[name]), f"{name} should have changed"
        else:
            assert torch.equal(value, before[name]), f"{name} should be frozen"


def test_trainable_selection_and_pos_embed_modes(task):
    vit = VARIANTS["class_token"]()
    warm = WarmupViT(vit, task.vocab_size, pos_embed="learned", trainable=("attn", "cls_token"))
    trained = {n for n, p in warm.vit.named_parameters() if p.requires_grad}
    assert trained == {"pos_embed", "cls_token"} | {
        n for n, _ in vit.named_parameters() if ".attn." in n
    }
    assert not warm.head.weight.requires_grad

    warm = WarmupViT(VARIANTS["class_token"](), task.vocab_size, trainable=("norm",))
    trained = {n for n, p in warm.vit.named_parameters() if p.requires_grad}
    assert trained == {"norm.weight", "norm.bias"} | {
        f"blocks.{i}.norm{j}.{w}" for i in range(2) for j in (1, 2) for w in ("weight", "bias")
    }

    random_pos = WarmupViT(VARIANTS["class_token"](), task.vocab_size, pos_embed="random")
    assert random_pos.random_pos.shape == (1, 16, 32)
    with pytest.raises(ValueError, match="valid names: " + ", ".join(TRAINABLE)):
        WarmupViT(VARIANTS["class_token"](), task.vocab_size, trainable=("blocks", "patch_embed"))
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        WarmupViT(VARIANTS["class_token"](), task.vocab_size, pos_embed="sincos")


def test_symbol_table_is_near_orthogonal_at_the_pos_embed_scale(task):
    vit = VARIANTS["class_token"]()
    warm = WarmupViT(vit, task.vocab_size)
    gram = warm.symbols @ warm.symbols.T  # (V, V)
    row_norm2 = gram.diagonal()
    expected = vit.pos_embed.pow(2).mean() * vit.embed_dim
    torch.testing.assert_close(row_norm2, expected.expand_as(row_norm2).detach())
    off_diagonal = gram - torch.diag(row_norm2)
    assert off_diagonal.abs().max() < 1e-5 * row_norm2.max()  # vocab 9 <= dim 32: exactly orthogonal


def test_sequence_length_must_match_the_grid(task):
    warm = WarmupViT(VARIANTS["class_token"](), task.vocab_size)
    with pytest.raises(ValueError, match=r"sequence length 64 .* 4 x 4 = 16 tokens"):
        warm(torch.zeros(2, 64, dtype=torch.long))


def test_masked_token_loss_counts_only_masked_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    loss_mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    loss, n_correct, n_masked = masked_token_loss(logits, targets, loss_mask)
    torch.testing.assert_close(loss, F.cross_entropy(logits[loss_mask], targets[loss_mask]))
    assert n_masked.item() == 4
    assert n_correct.item() == (logits.argmax(-1) == targets)[loss_mask].sum().item()

    logits.requires_grad_(True)
    loss, _, n_masked = masked_token_loss(logits, targets, torch.zeros_like(loss_mask))
    loss.backward()  # an all-unmasked batch gives loss 0 with a (zero) gradient, not NaN
    assert loss.item() == 0.0 and n_masked.item() == 0 and logits.grad.abs().sum() == 0


def test_learns_k_dyck_well_above_chance(task):
    """Every masked position is a closer, so guessing among the k closers gives 1/k = 25% for k = 4.

    Which closer it is follows from the bracket structure (the matching opener is never masked), so a
    model that learned to match brackets approaches 100%. An untrained model scores about chance or
    less (about 6% here); 60% (2.4x chance) needs real bracket matching. This model gets about 87% after
    300 steps of 32 sequences (about 10 s on one core).
    """
    torch.manual_seed(0)
    vit = timm.create_model("vitwarm_pico_patch4_32", img_size=16, depth=2, embed_dim=64, num_heads=4)
    warm = WarmupViT(vit, task.vocab_size)
    untrained = accuracy(warm, task, 512)
    train(warm, task, steps=300, batch_size=32, lr=2e-3)
    trained = accuracy(warm, task, 512)
    assert untrained < 0.4, untrained
    assert trained > 0.6, f"masked-token accuracy {trained:.3f} (untrained {untrained:.3f}, chance 0.25)"
