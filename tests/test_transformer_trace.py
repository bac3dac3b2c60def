"""A transformer block written as an nn.Module — LayerNorm, two attention heads split by chunk and
joined by cat, k.transpose(-2, -1), batched @, nn.Linear on (B, T, D) inputs, GELU, residuals —
traced with torch.fx, derived, verified, and its gradients at a point equal to the module's own."""

from __future__ import annotations

import textwrap

import torch

from backstep import derive
from backstep.trace import trace_model

BLOCK = """
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d=8, heads=2):
        super().__init__()
        torch.manual_seed(0)
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 16)
        self.fc2 = nn.Linear(16, d)

    def forward(self, x):
        qkv = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.chunk(self.heads, dim=-1) for t in (qkv[0], qkv[1], qkv[2]))
        outs = []
        for h in range(self.heads):
            att = torch.softmax(q[h] @ k[h].transpose(-2, -1) / math.sqrt(4), dim=-1)
            outs.append(att @ v[h])
        x = x + self.proj(torch.cat(outs, dim=-1))
        return (x + self.fc2(F.gelu(self.fc1(self.ln2(x))))).pow(2).mean()
"""


def test_a_transformer_block_module_traces_verifies_and_matches_its_own_gradients(tmp_path):
    path = tmp_path / "block.py"
    path.write_text(textwrap.dedent(BLOCK), encoding="utf-8")
    traced = trace_model(f"{path}:Block", {"x": (2, 5, 8)})
    for spelling in ("layer_norm(", "chunk(", "cat((", "swapaxes(", "linear("):
        assert spelling in traced.source, traced.source
    d = derive(traced.source, verify=True)
    assert d.verification.ok, d.verification
    module = traced.root.double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    module.zero_grad()
    module(x).backward()
    names = {name.replace(".", "_"): p for name, p in module.named_parameters()}
    at = {"x": x.tolist(), **{name: p.detach().tolist() for name, p in names.items()}}
    d = derive(traced.source, at=at)
    for name, p in names.items():
        got = torch.tensor(d.gradients[name].value, dtype=torch.float64)
        assert torch.allclose(got, p.grad, rtol=1e-9, atol=1e-11), name
