"""Seed 001's `TwoLayerNet`, the `torch.nn.Module` with a hand-written training loop, as backstep
derives it with `--torch` (torch.fx traces the module; its parameters become the variables
`linear1.weight` and `linear2.weight`):

    backstep derive --torch examples/two_layer_net_module.py:model --shape x=N,1000
    backstep derive --torch examples/two_layer_net_module.py:loss_model \
        --shape x=N,1000 --shape y=N,10

The second one is the model together with the seed's `loss_fn = nn.MSELoss(reduction='sum')`.
(The seed's forward reads the global `X`; here it reads its argument `x`.)
"""

import torch

N, D_in, H, D_out = 64, 1000, 100, 10  # the seed's sizes: a batch of 64, 1000 → 100 → 10


class TwoLayerNet(torch.nn.Module):
    def __init__(self, D_in, H, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H, bias=False)
        self.linear2 = torch.nn.Linear(H, D_out, bias=False)

    def forward(self, x):
        y_hat = self.linear2(self.linear1(x).clamp(min=0))
        return y_hat


class TwoLayerNetLoss(torch.nn.Module):
    """The model and the seed's loss in one forward: loss_fn(model(x), y)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.loss_fn = torch.nn.MSELoss(reduction="sum")

    def forward(self, x, y):
        return self.loss_fn(self.model(x), y)


model = TwoLayerNet(D_in, H, D_out)
loss_model = TwoLayerNetLoss(model)
