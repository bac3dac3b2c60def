"""The notation box of a document: exactly the symbols its printed math uses, each defined once.

A symbol is listed when its LaTeX spelling occurs in one of the document's formulas (the function,
the forward and backward steps, the rules, the gradients), so a document about `x**2 + 3` defines no
convolution and LeNet's defines ⋆, ∗ and rot₁₈₀. The meanings are LaTeX prose with `$…$` math, the
same in the PDF and in the Markdown (KaTeX); they say what backstep's own ops compute.
"""

from __future__ import annotations

import re
from types import SimpleNamespace as Row

# key -> (what marks its use in the document's LaTeX, the symbol as the box shows it)
SYMBOLS: dict[str, tuple[str, str]] = {
    "contribution": (r"\^\{\(\d+\)\}\}", r"\bar{x}^{(k)}"),
    "hadamard": (r"\\odot", r"a \odot b"),
    "transposed": (r"\^\{\\top\}", r"A^{\top}"),
    "sum_axis": (r"\\sum_\{", r"\textstyle\sum_{k}\left(x\right)"),
    "sum_all": (r"\\sum\\left\(", r"\textstyle\sum\left(x\right)"),
    "mean_axis": (r"\\operatorname\{mean\}_\{", r"\operatorname{mean}_{k}\left(x\right)"),
    "softmax_k": (r"\\operatorname\{softmax\}_\{", r"\operatorname{softmax}_{k}\left(z\right)"),
    "ce_mean": (r"\\operatorname\{CE\}", r"\operatorname{CE}\left(z, t\right)"),
    "one_hot": (r"\\operatorname\{onehot\}", r"\operatorname{onehot}\left(t\right)"),
    "indicator": (r"\\mathbf\{1\}\\left\[", r"\mathbf{1}\left[\cdot\right]"),
    "logistic": (r"\\sigma\\left\(", r"\sigma\left(x\right)"),
    "maxpool": (r"\\operatorname\{maxpool\}_\{", r"\operatorname{maxpool}_{k}\left(x\right)"),
    "route": (
        r"\\operatorname\{route\}_\{",
        r"\operatorname{route}_{k}\left(\bar{y} \to \operatorname{argmax} x\right)",
    ),
    "flattened": (r"\\operatorname\{flatten\}", r"\operatorname{flatten}\left(x\right)"),
    "unflattened": (r"\\operatorname\{unflatten\}_\{", r"\operatorname{unflatten}_{k}\left(x, s\right)"),
    "correlate": (r"\\star", r"x \star K"),
    "full": (r" \* ", r"a * b"),
    "rot180": (r"\\operatorname\{rot\}_\{180\}", r"\operatorname{rot}_{180}\left(K\right)"),
    "dilate": (r"\\operatorname\{dilate\}_\{", r"\operatorname{dilate}_{s}\left(a\right)"),
    "crop": (r"\\operatorname\{crop\}_\{", r"\operatorname{crop}_{p}\left(a\right)"),
    "padded": (r"\\operatorname\{pad\}_\{", r"\operatorname{pad}_{p}\left(a\right)"),
}

MEANINGS: dict[str, dict[str, str]] = {
    "en": {
        "adjoint": "the adjoint of $x$: the gradient of the output with respect to $x$, of the same shape as $x$",
        "contribution": (r"the $k$-th contribution to $\bar{x}$ where $x$ feeds several nodes; $\bar{x}$ is their sum"),
        "hadamard": "product entry by entry (Hadamard); written side by side, two arrays are a matrix product",
        "transposed": "transposed",
        "sum_axis": "sum over axis $k$ (axes counted from 0); that axis leaves the shape",
        "sum_all": "sum of all entries",
        "mean_axis": r"mean over axis $k$: $\textstyle\sum_{k}$ divided by the size of that axis",
        "softmax_k": r"$e^{z}$ divided by its sum along axis $k$: along rows for $k = 1$, each row sums to 1",
        "ce_mean": (
            r"cross-entropy with class labels $t$: $-\frac{1}{N}\sum_{n} \log \operatorname{softmax}_{1}(z)_{n, t_n}$;"
            " the $1/N$ is the mean over the $N$ rows (PyTorch's default reduction, mean), absent with the sum"
        ),
        "one_hot": "the matrix with a 1 in row $n$, column $t_n$, and 0 elsewhere",
        "indicator": "1 where the condition holds, 0 elsewhere, entry by entry",
        "logistic": r"the logistic sigmoid $1/(1 + e^{-x})$",
        "maxpool": r"the maximum of each $k \times k$ window (stride $k$ unless $s$ is given)",
        "route": (
            r"each entry of $\bar{y}$ sent back to where its window of $x$ has its maximum, 0 elsewhere"
            " (max pooling's backward)"
        ),
        "flattened": "each sample's entries in one row: $N \\times C \\times H \\times W$ becomes $N \\times CHW$",
        "unflattened": "axis $k$ split back into the sizes $s$ (undoes flatten)",
        "correlate": (
            "cross-correlation over the input channels, as conv2d computes it (the kernel is not flipped);"
            " no padding and stride 1 unless $p$ and $s$ are written under $\\star$"
        ),
        "full": (
            r"full cross-correlation over the output channels: $a$ padded with $k - 1$ zeros on every side"
            r" ($k$: the kernel's size), then $\star$"
        ),
        "rot180": "the kernel turned by 180° in its two spatial axes (flipped up–down and left–right)",
        "dilate": "$s - 1$ zeros put between neighbouring entries (undoes stride $s$)",
        "crop": "$p$ entries cut off every spatial border (undoes padding $p$)",
        "padded": (
            "zeros added: $p$ on every spatial border (a convolution's padding), or "
            r"$\operatorname{pad}_{k}(x, (a, b))$: $a$ before and $b$ after along axis $k$"
        ),
    },
    "zh": {
        "adjoint": "$x$ 的伴随：输出对 $x$ 的梯度，形状与 $x$ 相同",
        "contribution": r"$x$ 流向多个节点时对 $\bar{x}$ 的第 $k$ 份贡献；$\bar{x}$ 是它们的和",
        "hadamard": "逐元素乘积（Hadamard 积）；两个数组并排书写表示矩阵乘法",
        "transposed": "转置",
        "sum_axis": "沿第 $k$ 轴求和（轴从 0 开始数）；该轴从形状中消失",
        "sum_all": "所有元素之和",
        "mean_axis": r"沿第 $k$ 轴求平均：$\textstyle\sum_{k}$ 除以该轴的长度",
        "softmax_k": r"$e^{z}$ 除以它沿第 $k$ 轴的和：$k = 1$ 时按行，每行之和为 1",
        "ce_mean": (
            r"以类别标签 $t$ 计算的交叉熵：$-\frac{1}{N}\sum_{n} \log \operatorname{softmax}_{1}(z)_{n, t_n}$；"
            "$1/N$ 来自对 $N$ 行取平均（PyTorch 默认的 mean 归约），用 sum 归约时没有"
        ),
        "one_hot": "第 $n$ 行第 $t_n$ 列为 1、其余为 0 的矩阵",
        "indicator": "逐元素：条件成立处为 1，否则为 0",
        "logistic": r"logistic sigmoid 函数 $1/(1 + e^{-x})$",
        "maxpool": r"每个 $k \times k$ 窗口的最大值（未注明 $s$ 时步长为 $k$）",
        "route": r"把 $\bar{y}$ 的每个元素送回 $x$ 中对应窗口最大值所在的位置，其余为 0（最大池化的反向）",
        "flattened": "每个样本的元素排成一行：$N \\times C \\times H \\times W$ 变为 $N \\times CHW$",
        "unflattened": "把第 $k$ 轴拆回尺寸 $s$（flatten 的逆）",
        "correlate": (
            "对输入通道求和的互相关，与 conv2d 的计算相同（卷积核不翻转）；"
            "$\\star$ 下未注明 $p$、$s$ 时无填充、步长为 1"
        ),
        "full": r"对输出通道求和的完全互相关：$a$ 四周各补 $k - 1$ 个零（$k$：卷积核尺寸），再做 $\star$",
        "rot180": "卷积核在两个空间轴上旋转 180°（上下、左右翻转）",
        "dilate": "相邻元素之间插入 $s - 1$ 个零（步长 $s$ 的逆）",
        "crop": "每条空间边界各裁去 $p$ 个元素（填充 $p$ 的逆）",
        "padded": (
            r"补零：每条空间边界各补 $p$ 个零（卷积的填充），"
            r"或 $\operatorname{pad}_{k}(x, (a, b))$：沿轴 $k$ 前补 $a$ 个、后补 $b$ 个"
        ),
    },
}


def adjoint_symbol(notation: str, loss_latex: str, of: str = "x") -> str:
    """The adjoint of `of` as the document writes it."""
    if notation == "partial":
        return rf"\frac{{\partial {loss_latex}}}{{\partial {of}}}"
    if notation == "delta":
        return rf"\delta_{{{of}}}"
    return rf"\bar{{{of}}}"


def notation_box(formulas: list[str], notation: str, loss_latex: str, lang: str) -> list[Row]:
    """The rows of the notation box for a document whose math is `formulas` (LaTeX strings)."""
    math = "\n".join(formulas)

    def spelled(latex: str) -> str:  # x̄ and ȳ in the document's notation
        for of in "xy":
            latex = latex.replace(rf"\bar{{{of}}}", adjoint_symbol(notation, loss_latex, of))
        return latex

    meanings = MEANINGS[lang]
    rows = [Row(key="adjoint", symbol=spelled(r"\bar{x}"), meaning=meanings["adjoint"])]
    for key, (mark, symbol) in SYMBOLS.items():
        if re.search(mark, math):
            rows.append(Row(key=key, symbol=spelled(symbol), meaning=spelled(meanings[key])))
    return rows
