"""The message catalogue: every sentence of prose a renderer shows, in each language.

Renderers never write prose themselves; they ask ``Messages(lang)("key", **fields)``. Math is not
prose (it comes from ``backstep.printing``), and neither are names from the user's formula or
torch's ``grad_fn`` names. Adding a language is adding one dictionary here with the same keys
(a test checks that every language has every key and the same fields) and a title to every op
(``Op.title``: the op table refuses an op without one in each language).
"""

from __future__ import annotations

import datetime
import string

from ..languages import LANGS
from ..ops import OPS

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        # headings
        "function": "Function",
        "program": "Program",
        "shapes": "Shapes",
        "graph": "Computational graph",
        "forward": "Forward pass",
        "backward": "Backward pass",
        "gradients": "Gradients",
        "verification": "Verification",
        "derivation_title": "Backpropagation of {output}",
        # column headings
        "col_step": "step",
        "col_shape": "shape",
        "col_value": "value",
        "col_torch": "torch",
        "col_from": "from",
        "col_rule": "rule",
        "col_gradient": "gradient",
        "col_variable": "variable",
        "col_role": "role",
        "role_input_grad": "input (gradient wanted)",
        "role_input_const": "input (a constant)",
        "role_output": "output",
        "col_domain": "drawn from",
        "col_check": "quantity",
        "col_abs_err": "max abs error",
        "col_rel_err": "max rel error",
        "col_result": "result",
        "scalar": "scalar",
        # the derivation
        "seed": "seed",
        "seed_sentence": "The backward pass starts from the seed {seed} and applies the chain rule node by node, "
        "from the output back to the inputs.",
        "forward_intro": "Every intermediate value gets a name, in the order torch computes it:",
        "gradients_intro": "Each gradient in terms of the inputs, with the shape of its variable:",
        "gradients_intro_long": (
            "Each gradient in terms of the inputs — or, where that is too long to print, of the named steps "
            "of the backward pass — with the shape of its variable:"
        ),
        "colon": ": ",
        "list_sep": ", ",
        "wrt_only": "gradients with respect to {wrt} (the others are constants)",
        "at_values": "at {values}",
        "values_at": "Every step below is also evaluated at {values}.",
        "feeds_several": "{name} feeds several nodes",
        "chain_rule_sum": "multivariable chain rule: add the contributions",
        "chain_rule_short": "multivariable chain rule",
        "layer_rule": "{op}, as one layer",
        "too_long": "in terms of the named steps: expanded it is too long to read",
        "gradients_intro_named": (
            "Each gradient in terms of the program's named intermediates and their adjoints, as a textbook "
            "writes it, with the shape of its variable:"
        ),
        "where_named": "with",
        "not_simplified": "as built: simplifying it ran out of time, see the notes",
        "see_step": "step ({step})",
        "note": "note: {note}",
        "graph_legend": (
            "Forward edges carry values from the inputs to the output; the red label beside each edge is the "
            "gradient that flows back along it in the backward pass."
        ),
        "graph_legend_plain": (
            "Edges carry values forward, from the inputs to the output; the label on each edge is the gradient "
            "that flows back along it in the backward pass."
        ),
        "graph_too_large": "The graph has {count} nodes: too many to draw legibly.",
        "graph_no_room": (
            "The graph has {count} nodes: drawn with its labels at 7 pt or more it does not fit a page, even in"
            " columns, so it is left out here (the forward pass below lists every node; the Markdown draws it)."
        ),
        "graph_sideways": "The graph is drawn on the next page, turned sideways.",
        "graph_layers": (
            "A dashed box is a layer written by hand that the backward pass takes as one step (--compact): the"
            " edges inside it carry no gradient of their own."
        ),
        "notation": "Notation",
        "graph_numbers": (
            "At the values above, as in CS231n's circuit diagrams, each edge also carries its forward value (green,"
            " on one side) and the value of its gradient (red, on the other)."
        ),
        "graph_numbers_plain": (
            "At the values above, each edge also carries its forward value (first line) and the value of its"
            " gradient (second line)."
        ),
        "graph_arrays": "Arrays are not written on the edges: their values are in the tables below.",
        "verified_with_at": " with PyTorch autograd ({dtype}, at the values above and {others} random points{sizes})",
        "verified_with_at_only": " with PyTorch autograd ({dtype}, at the values above{sizes})",
        "domain_real": "real",
        "domain_positive": "positive",
        "domain_nonnegative": "nonnegative",
        "domain_nonzero": "nonzero",
        # the verification report
        "verified": "verified",
        "mismatch": "MISMATCH",
        "verified_with": " with PyTorch autograd ({dtype}, {points} random points{sizes})",
        "sizes_suffix": ", {sizes}",
        "every_intermediate": "every intermediate (retain_grad)",
        "forward_values": "forward values",
        "grad_fn_names": "grad_fn names",
        "first_mismatch": "first mismatch: {kind} of {name}: {detail}",
        "max_abs_error": "max abs error {error}",
        "kind_gradient": "gradient",
        "kind_adjoint": "adjoint",
        "kind_forward": "forward value",
        "kind_grad_fn": "grad_fn name",
        "not_verified": "Not verified against PyTorch (verification was skipped).",
        # exercise and solution sheets
        "exercises": "Exercises",
        "solutions": "Solutions",
        "problem": "Problem {number}",
        "task": "Write out the forward pass and every step of the backward pass, and give {grads}.",
        "task_shapes": "The shapes are",
        "given_graph": "The computational graph:",
        "work_space": "Work space",
        "name": "Name",
        "course": "Course",
        "date": "Date",
        "instructions": (
            "For each problem, name the intermediate values of the forward pass, then apply the chain rule "
            "node by node from the output back to the inputs, writing the local rule you use. "
            "Check that every gradient has the shape of its variable."
        ),
        "solutions_intro": (
            "Every derivation below was checked numerically against PyTorch autograd: each step, each "
            "intermediate gradient and each final gradient."
        ),
        "page": "Page",
    },
    "zh": {
        "function": "函数",
        "program": "程序",
        "shapes": "形状",
        "graph": "计算图",
        "forward": "前向传播",
        "backward": "反向传播",
        "gradients": "梯度",
        "verification": "验证",
        "derivation_title": "{output} 的反向传播推导",
        "col_step": "步骤",
        "col_shape": "形状",
        "col_value": "数值",
        "col_torch": "torch",
        "col_from": "来自",
        "col_rule": "规则",
        "col_gradient": "梯度",
        "col_variable": "变量",
        "col_role": "角色",
        "role_input_grad": "输入（求梯度）",
        "role_input_const": "输入（常量）",
        "role_output": "输出",
        "col_domain": "取值范围",
        "col_check": "检验项",
        "col_abs_err": "最大绝对误差",
        "col_rel_err": "最大相对误差",
        "col_result": "结果",
        "scalar": "标量",
        "seed": "初始梯度",
        "seed_sentence": "反向传播从初始梯度 {seed} 开始，从输出到输入逐个节点应用链式法则。",
        "forward_intro": "按 torch 的计算顺序，为每个中间值命名：",
        "gradients_intro": "用输入表示的各个梯度，以及对应变量的形状：",
        "gradients_intro_long": (
            "用输入表示的各个梯度（展开后过长的，用反向传播中具名的步骤表示），以及对应变量的形状："
        ),
        "colon": "：",
        "list_sep": "、",
        "wrt_only": "只对 {wrt} 求梯度（其余变量视为常量）",
        "at_values": "取值：{values}",
        "values_at": "下面的每一步同时在 {values} 处求值。",
        "feeds_several": "{name} 流向多个节点",
        "chain_rule_sum": "多元链式法则：把各条路径的贡献相加",
        "chain_rule_short": "多元链式法则",
        "layer_rule": "{op}（合为一层）",
        "too_long": "用具名的中间步骤表示：完全展开后过长，难以阅读",
        "gradients_intro_named": "像教科书一样，用程序中具名的中间量及其梯度表示各个梯度，以及对应变量的形状：",
        "where_named": "其中",
        "not_simplified": "未化简：化简超时，见注",
        "see_step": "见第 ({step}) 步",
        "note": "注：{note}",
        "graph_legend": "前向边从输入向输出传递数值；每条边旁的红色标注是反向传播时沿这条边传回的梯度。",
        "graph_legend_plain": "边从输入向输出传递数值；每条边上标注的是反向传播时沿这条边传回的梯度。",
        "graph_too_large": "计算图有 {count} 个节点，太多，无法清楚地画出。",
        "graph_no_room": (
            "计算图有 {count} 个节点：标注不小于 7 pt 时，即使分栏也放不进一页，这里从略"
            "（下面的前向传播列出了每个节点；Markdown 版本画出了它）。"
        ),
        "graph_sideways": "计算图画在下一页（横向）。",
        "graph_layers": "虚线框是手写的一层，反向传播把它作为一步（--compact）：框内的边没有单独的梯度。",
        "notation": "记号",
        "graph_numbers": (
            "与 CS231n 的电路图一样，在上面给出的值处，每条边还标出前向值（绿色，在一侧）和梯度的值（红色，在另一侧）。"
        ),
        "graph_numbers_plain": "在上面给出的值处，每条边还标出前向值（第一行）和梯度的值（第二行）。",
        "graph_arrays": "数组不标在边上：它们的值见下面的表格。",
        "verified_with_at": "（与 PyTorch 自动求导比对：{dtype}，在上面给出的值处及另外 {others} 个随机点{sizes}）",
        "verified_with_at_only": "（与 PyTorch 自动求导比对：{dtype}，在上面给出的值处{sizes}）",
        "domain_real": "实数",
        "domain_positive": "正数",
        "domain_nonnegative": "非负数",
        "domain_nonzero": "非零数",
        "verified": "已验证",
        "mismatch": "不一致",
        "verified_with": "（与 PyTorch 自动求导比对：{dtype}，{points} 个随机点{sizes}）",
        "sizes_suffix": "，{sizes}",
        "every_intermediate": "所有中间量（retain_grad）",
        "forward_values": "前向值",
        "grad_fn_names": "grad_fn 名称",
        "first_mismatch": "第一处不一致：{name} 的{kind}：{detail}",
        "max_abs_error": "最大绝对误差 {error}",
        "kind_gradient": "梯度",
        "kind_adjoint": "伴随梯度",
        "kind_forward": "前向值",
        "kind_grad_fn": "grad_fn 名称",
        "not_verified": "未与 PyTorch 比对（跳过了验证）。",
        "exercises": "习题",
        "solutions": "解答",
        "problem": "第 {number} 题",
        "task": "写出前向传播和反向传播的每一步，并求出 {grads}。",
        "task_shapes": "各变量的形状为",
        "given_graph": "计算图：",
        "work_space": "演算区",
        "name": "姓名",
        "course": "课程",
        "date": "日期",
        "instructions": (
            "每道题先为前向传播的中间量命名，再从输出到输入逐个节点应用链式法则，并写出所用的局部规则。"
            "检查每个梯度的形状是否与对应变量的形状相同。"
        ),
        "solutions_intro": "下列每个推导都已用 PyTorch 自动求导逐项数值验证：每一步、每个中间梯度以及每个最终梯度。",
        "page": "页",
    },
}

# How a list of items is joined in running prose ("W1, W2 and b" / "W1、W2 和 b").
_AND = {"en": (", ", " and "), "zh": ("、", " 和 ")}


def check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGS)})")
    return lang


class Messages:
    """The catalogue in one language: ``msg("problem", number=2)`` -> ``"Problem 2"``."""

    def __init__(self, lang: str = "en"):
        self.lang = check_lang(lang)
        self.table = MESSAGES[lang]

    def __call__(self, key: str, **fields) -> str:
        return self.table[key].format(**fields)

    def op(self, name: str) -> str:
        """The name of an op in prose (its title); a name that is not an op's is shown as it is."""
        op = OPS.get(name)
        return op.title[self.lang] if op is not None else name

    def join(self, items: list[str]) -> str:
        sep, last = _AND[self.lang]
        if len(items) <= 1:
            return "".join(items)
        return sep.join(items[:-1]) + last + items[-1]


MONTHS_EN = ("January February March April May June July August September October November December").split()


def format_date(text: str, lang: str = "en") -> str:
    """An ISO date (2026-03-02) as the language writes it (2 March 2026, 2026年3月2日); other text as is."""
    try:
        day = datetime.date.fromisoformat(text.strip())
    except ValueError:
        return text
    if lang == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {MONTHS_EN[day.month - 1]} {day.year}"


def fields_of(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}
