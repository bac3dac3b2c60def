"""Seed 000's LeNet-style `MyNetwork` as a `torch.nn.Module`: the network of `lenet.bs` (issue #3),
which backstep derives from the module itself with `--torch`:

    backstep derive --torch examples/lenet_module.py:loss_model --shape x=N,3,12,12 --shape t=N

conv (3 → 6 channels, 5×5) → relu → 2×2 max-pool → flatten to 6·4·4 = 96 → linear 96 → 20 → relu
→ linear 20 → 10 → cross-entropy with class-index targets `t`, on 12×12 images (small, so that the
verification is quick; the seed's own sizes are 32×32 and 120/84 hidden units). torch.fx traces
`nn.Conv2d`, `nn.MaxPool2d`, `x.view(-1, 96)`, `nn.Linear` and `F.cross_entropy` into backstep's
`conv2d`, `max_pool2d`, `reshape`, `linear` and `cross_entropy`; the parameters are the variables
`net.conv1.weight`, `net.conv1.bias`, `net.fc1.weight`, …
"""

import torch.nn.functional as F
from torch import nn


class MyNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, kernel_size=5)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(6 * 4 * 4, 20)
        self.fc2 = nn.Linear(20, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = F.relu(self.fc1(x.view(-1, 6 * 4 * 4)))
        return self.fc2(x)


class MyNetworkLoss(nn.Module):
    """The network and its loss, F.cross_entropy(net(x), t), in one forward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return F.cross_entropy(self.net(x), t)


net = MyNetwork()
loss_model = MyNetworkLoss(net)
