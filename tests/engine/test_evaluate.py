import torch
from torch import nn

from bench.engine.evaluate import evaluate


class Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x.long().flatten()]


def test_top1_top5_against_hand_count():
    torch.manual_seed(0)
    logits = torch.randn(20, 10)
    labels = torch.randint(0, 10, (20,))
    idx = torch.arange(20).float()
    loader = [(idx[:8, None], labels[:8]), (idx[8:, None], labels[8:])]
    ev = evaluate(Fixed(logits), loader)
    order = logits.argsort(dim=1, descending=True)
    top1 = sum(int(order[i, 0] == labels[i]) for i in range(20)) / 20 * 100
    top5 = sum(int(labels[i] in order[i, :5]) for i in range(20)) / 20 * 100
    assert ev["top1"] == top1 and ev["top5"] == top5 and ev["n"] == 20
    assert abs(ev["loss"] - nn.functional.cross_entropy(logits, labels).item()) < 1e-6
    assert evaluate(Fixed(logits), loader, max_batches=1)["n"] == 8
