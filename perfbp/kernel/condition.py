"""Conditions on a watch's value, and the BPF program that tests them on every hit.

A condition is written over two values of the watched bytes, read as an
unsigned number of the watch's length (1, 2, 4 or 8 bytes, little-endian):

* ``new``: the bytes at the time of the hit.  x86 data breakpoints trap once
  the access is done, so for a write this is the value written.
* ``old``: what ``new`` was at the previous hit the program saw (for the
  first hit: what the map was given, 0 unless the loader set it).

Examples::

    new == 0                    who wrote 0?
    old != 0 and new == 0       who cleared it?
    new & 0x80000000            who set the top bit of a u32?
    not (new < 10 or new > 20)

Grammar, from the loosest binding to the tightest::

    condition := and ("or" and)*
    and       := not ("and" not)*
    not       := "not" not | compare
    compare   := mask [("==" | "!=" | "<" | "<=" | ">" | ">=") mask]
    mask      := atom ("&" atom)*
    atom      := "new" | "old" | NUMBER | "(" condition ")"
    NUMBER    := decimal (no leading zero) | 0x hexadecimal

As in Python, ``&`` binds tighter than a comparison (``new & 1 == 0`` is
``(new & 1) == 0``), and a number where a truth is expected is true when it
is not zero.  Comparisons are unsigned and do not chain (``1 < new < 5`` is
refused: write ``1 < new and new < 5``); a comparison's result is not a
number (``(new == 1) == (old == 1)`` is refused).  A number must fit the
watch's length.  Every refusal is an :class:`~perfbp.errors.InvalidCondition`:
one line, and :meth:`~perfbp.errors.InvalidCondition.caret` under the problem.

The program (:func:`hit_program`) is a ``BPF_PROG_TYPE_PERF_EVENT`` program
attached to a breakpoint's events: the kernel runs it on every hit, after
counting the hit, and writes the sample only when it returns non-zero (so
the event's own count stays exact whatever the condition).  It reads the
watched bytes from the address in its context (``bpf_perf_event_data.addr``:
the breakpoint's ``bp_addr``, which follows the event when it is moved), and
keeps its tally in the value of an array map of one entry (:class:`Tally`).

Pure Python: this module builds instructions and needs no kernel;
:mod:`perfbp.kernel.values` loads them.
"""

from __future__ import annotations

import errno
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple, Union

from ..errors import InvalidCondition
from .records import VALUES_KIND, VALUES_RAW
from ._uapi import (
    BPF_ADD,
    BPF_AND,
    BPF_B,
    BPF_DW,
    BPF_F_CURRENT_CPU,
    BPF_FUNC_perf_event_output,
    BPF_FUNC_probe_read_kernel,
    BPF_FUNC_probe_read_user,
    BPF_H,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_REG_0,
    BPF_REG_1,
    BPF_REG_2,
    BPF_REG_3,
    BPF_REG_4,
    BPF_REG_5,
    BPF_REG_6,
    BPF_REG_7,
    BPF_REG_8,
    BPF_REG_9,
    BPF_REG_10,
    BPF_RSH,
    BPF_W,
)
from .bpf import (
    S32_MAX,
    Assembler,
    BPF_ALU64_IMM,
    BPF_ALU64_REG,
    BPF_ATOMIC_OP,
    BPF_EMIT_CALL,
    BPF_EXIT_INSN,
    BPF_JMP_A,
    BPF_JMP_IMM,
    BPF_JMP_REG,
    BPF_LD_IMM64,
    BPF_LD_MAP_FD,
    BPF_LD_MAP_VALUE,
    BPF_LDX_MEM,
    BPF_MOV32_IMM,
    BPF_MOV64_IMM,
    BPF_MOV64_REG,
    BPF_ST_MEM,
    BPF_STX_MEM,
    Insn,
)

LENGTHS = (1, 2, 4, 8)
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
NAMES = ("new", "old")


# --- the tree -------------------------------------------------------------------------

@dataclass(frozen=True)
class Name:
    """``new`` or ``old``, at column ``at``."""

    name: str
    at: int


@dataclass(frozen=True)
class Number:
    """A literal, as written (``text``) at column ``at``."""

    value: int
    at: int
    text: str


@dataclass(frozen=True)
class Mask:
    """``a & b & ...``: at least two terms (numbers)."""

    terms: "tuple[Node, ...]"
    at: int


@dataclass(frozen=True)
class Compare:
    """``left OP right``; ``at`` is the operator's column."""

    op: str
    left: "Node"
    right: "Node"
    at: int


@dataclass(frozen=True)
class Not:
    operand: "Node"
    at: int


@dataclass(frozen=True)
class Logic:
    """``a and b and ...`` or ``a or b or ...`` (``op``), at least two terms."""

    op: str
    terms: "tuple[Node, ...]"
    at: int


Node = Union[Name, Number, Mask, Compare, Not, Logic]


def is_number(node: Node) -> bool:
    """Whether the node is a number (else a truth: a comparison, and, or, not)."""
    return isinstance(node, (Name, Number, Mask))


# --- reading --------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[0-9][0-9A-Za-z_]*)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|&|\(|\))
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)

#: what a stray character most likely meant
_HINTS = {
    "=": "`=` is not a comparison: write ==",
    "!": "write `not`, or != for unequal",
    "|": "write `or` (there is no bitwise or)",
    "-": "values are unsigned: there are no negative numbers",
    "~": "there is no ~: write the mask itself (0xfffffffe)",
    "+": "there is no arithmetic: compare new and old to numbers",
    "*": "there is no arithmetic: compare new and old to numbers",
}


class _Token(NamedTuple):
    kind: str    # number, word, op, end
    text: str
    at: int


def _error(text: str, at: int, why: str) -> InvalidCondition:
    shown = text if len(text) <= 60 else text[:57] + "..."
    where = f" (column {at + 1})" if text.strip() else ""
    return InvalidCondition(f"condition {shown!r}: {why}{where}", text=text, column=at)


def _tokens(text: str) -> "list[_Token]":
    out: "list[_Token]" = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        tok, at = m.group(), m.start()
        if kind == "space":
            continue
        if kind == "other":
            if tok == "|" and text[at + 1:at + 2] == "|":
                raise _error(text, at, "write `or` (|| is C's spelling)")
            raise _error(text, at, _HINTS.get(tok, f"{tok!r} is not part of a condition"))
        if kind == "op" and tok == "&" and text[at + 1:at + 2] == "&":
            raise _error(text, at, "write `and` (&& is C's spelling)")
        if kind == "word" and tok not in NAMES + ("and", "or", "not"):
            raise _error(text, at, f"unknown name {tok!r}: a condition knows new, old, "
                                   f"and, or, not")
        out.append(_Token(kind, tok, at))
    out.append(_Token("end", "", len(text)))
    return out


def _number(tok: _Token, text: str) -> Number:
    s = tok.text
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", s):
        value = int(s, 16)
    elif re.fullmatch(r"0|[1-9][0-9]*", s):
        value = int(s)
    elif re.fullmatch(r"0[0-9]+", s):
        octal = f", or {int(s, 8):#x} for octal {s}" if re.fullmatch("[0-7]+", s) else ""
        raise _error(text, tok.at, f"{s} starts with 0, which C would read as octal: write "
                                   f"{int(s)} for decimal{octal}")
    else:
        raise _error(text, tok.at, f"{s!r} is not a number (decimal, or hexadecimal 0x...)")
    if value >> 64:
        raise _error(text, tok.at, f"{s} does not fit in 64 bits")
    return Number(value, tok.at, s)


#: the longest condition, in characters: the program of one this long
#: (about 150 comparisons) stays far below the verifier's limits
MAX_TEXT = 1000
#: parentheses and nots nested deeper than this are refused
MAX_DEPTH = 32


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def deeper(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} deep (parentheses and nots): "
                            f"write it flatter", tok)

    @property
    def tok(self) -> _Token:
        return self.toks[self.i]

    def take(self) -> _Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, why: str, tok: "_Token | None" = None) -> InvalidCondition:
        tok = tok or self.tok
        return _error(self.text, tok.at, why)

    def condition(self) -> Node:
        return self.logic("or", self.and_)

    def and_(self) -> Node:
        return self.logic("and", self.not_)

    def logic(self, op: str, operand) -> Node:
        first = operand()
        terms = [first]
        while self.tok.kind == "word" and self.tok.text == op:
            self.take()
            terms.append(operand())
        return first if len(terms) == 1 else Logic(op, tuple(terms), _start(first))

    def not_(self) -> Node:
        if self.tok.kind == "word" and self.tok.text == "not":
            self.deeper(self.tok)
            at = self.take().at
            node = Not(self.not_(), at)
            self.depth -= 1
            return node
        return self.compare()

    def compare(self) -> Node:
        left = self.mask()
        if not (self.tok.kind == "op" and self.tok.text in COMPARISONS):
            return left
        op = self.take()
        right = self.mask()
        for side in (left, right):
            if not is_number(side):
                raise self.fail(f"{op.text} compares numbers, and "
                                f"{_shown(self.text, side)!r} is true or false, not a "
                                f"number: combine those with and, or, not", op)
        if self.tok.kind == "op" and self.tok.text in COMPARISONS:
            raise self.fail(f"comparisons do not chain: write "
                            f"'... {op.text} {_shown(self.text, right)} and "
                            f"{_shown(self.text, right)} {self.tok.text} ...'")
        return Compare(op.text, left, right, op.at)

    def mask(self) -> Node:
        first = self.atom()
        terms = [first]
        while self.tok.kind == "op" and self.tok.text == "&":
            amp = self.take()
            terms.append(self.atom())
            for term in (terms[0], terms[-1]):
                if not is_number(term):
                    raise self.fail(f"& masks numbers, and {_shown(self.text, term)!r} is "
                                    f"true or false, not a number", amp)
        return first if len(terms) == 1 else Mask(tuple(terms), _start(first))

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.take()
            return _number(tok, self.text)
        if tok.kind == "word" and tok.text in NAMES:
            self.take()
            return Name(tok.text, tok.at)
        if tok.kind == "op" and tok.text == "(":
            self.deeper(tok)
            self.take()
            inner = self.condition()
            self.depth -= 1
            if not (self.tok.kind == "op" and self.tok.text == ")"):
                raise self.fail(f"expected ) to close the ( at column {tok.at + 1}"
                                if self.tok.kind == "end" else
                                f"expected ) or an operator, not {self.tok.text!r}")
            self.take()
            return inner
        if tok.kind == "end":
            raise self.fail("the condition is empty" if tok.at == 0 or not self.text.strip()
                            else "the condition ends too early: expected new, old, a "
                                 "number or (")
        raise self.fail(f"expected new, old, a number or (, not {tok.text!r}")


def _start(node: Node) -> int:
    if isinstance(node, (Mask, Logic)):
        return node.at
    if isinstance(node, Compare):
        return _start(node.left)
    return node.at


def _end(node: Node, text: str) -> int:
    if isinstance(node, Number):
        return node.at + len(node.text)
    if isinstance(node, Name):
        return node.at + len(node.name)
    if isinstance(node, (Mask, Logic)):
        return _end(node.terms[-1], text)
    if isinstance(node, Compare):
        return _end(node.right, text)
    return _end(node.operand, text)


def _shown(text: str, node: Node) -> str:
    """The text of a node as written (without the parentheses around it)."""
    return text[_start(node):_end(node, text)]


@dataclass(frozen=True)
class Condition:
    """A parsed condition.

    Attributes:
        text: as written.
        tree: the parsed expression.
    """

    text: str
    tree: Node

    @property
    def uses_old(self) -> bool:
        """Whether ``old`` appears (the program then reads the last value)."""
        return "old" in _names(self.tree)

    def check(self, length: int) -> None:
        """Refuse a condition that cannot apply to a watch of ``length`` bytes:
        a number that does not fit.

        Raises:
            InvalidCondition: with the column of the number.
        """
        if length not in LENGTHS:
            raise InvalidCondition(f"condition {self.text!r}: a value is 1, 2, 4 or 8 "
                                   f"bytes, not {length}", text=self.text, column=0)
        top = (1 << 8 * length) - 1
        for node in _walk(self.tree):
            if isinstance(node, Number) and node.value > top:
                raise _error(self.text, node.at,
                             f"{node.text} does not fit in new and old, which are "
                             f"{length} byte{'s' if length > 1 else ''} here (0 to {top:#x})")

    def evaluate(self, new: int, old: int) -> bool:
        """The condition's truth for these values, in Python (what the
        program computes in the kernel)."""
        return bool(_value(self.tree, new, old))

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Condition:
    """Read a condition (see the module's grammar).

    Raises:
        InvalidCondition: one line naming the problem and its column.
    """
    if not isinstance(text, str):
        raise InvalidCondition(f"a condition is text, such as 'new == 0', not "
                               f"{type(text).__name__} {text!r:.40}", text="", column=0)
    bad = next((i for i, c in enumerate(text) if not c.isprintable() and c not in " \t"), None)
    if bad is not None:
        raise _error(text, bad, f"{text[bad]!r} is a control character: write the condition "
                                f"on one line")
    if len(text) > MAX_TEXT:
        raise _error(text, MAX_TEXT, f"the condition is {len(text):,} characters long, and "
                                     f"at most {MAX_TEXT:,} are read: write a shorter one")
    p = _Parser(text)
    tree = p.condition()
    if p.tok.kind != "end":
        tok = p.tok
        why = ("a ) without its (" if tok.text == ")" else
               f"expected and, or, or an operator before {tok.text!r}")
        raise p.fail(why)
    return Condition(text, tree)


def read_conditions(condition, values: bool = False) -> "list[Condition | None] | None":
    """What the API's ``condition=`` and ``values=`` ask for, read: a list
    of conditions (parsed; None in it: every hit), one for all watches or one
    per watch; ``[None]`` for values without a condition; None for neither.

    Raises:
        InvalidCondition: a condition cannot be read (or is not text).
    """
    if condition is None:
        return [None] if values else None
    items = list(condition) if isinstance(condition, (list, tuple)) else [condition]
    return [c if c is None or isinstance(c, Condition) else parse(c) for c in items]


def _walk(node: Node):
    yield node
    if isinstance(node, (Mask, Logic)):
        for t in node.terms:
            yield from _walk(t)
    elif isinstance(node, Compare):
        yield from _walk(node.left)
        yield from _walk(node.right)
    elif isinstance(node, Not):
        yield from _walk(node.operand)


def _names(node: Node) -> "set[str]":
    return {n.name for n in _walk(node) if isinstance(n, Name)}


_PY_COMPARE = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _value(node: Node, new: int, old: int) -> int:
    """A number's value, or a truth as 0/1."""
    if isinstance(node, Name):
        return new if node.name == "new" else old
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Mask):
        out = (1 << 64) - 1
        for t in node.terms:
            out &= _value(t, new, old)
        return out
    if isinstance(node, Compare):
        return int(_PY_COMPARE[node.op](_value(node.left, new, old),
                                        _value(node.right, new, old)))
    if isinstance(node, Not):
        return int(not _value(node.operand, new, old))
    if node.op == "and":
        return int(all(_value(t, new, old) for t in node.terms))
    return int(any(_value(t, new, old) for t in node.terms))


# --- compiling --------------------------------------------------------------------------
#
# A truth compiles to jumping code: instructions that end by jumping to the
# label of "true" or of "false" (no 0/1 is ever materialized).  A number is
# folded to a constant where it can be, else computed into a register: new
# and old are kept in r8 and r9; a mask is computed into a scratch register.

_REG = {"new": BPF_REG_8, "old": BPF_REG_9}
_JUMP = {"==": BPF_JEQ, "!=": BPF_JNE, "<": BPF_JLT, "<=": BPF_JLE, ">": BPF_JGT, ">=": BPF_JGE}
_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class _Folded(NamedTuple):
    """A number reduced: a constant, or ``names`` (all ANDed) ANDed with
    ``mask`` (None: no mask)."""

    const: "int | None"
    names: "tuple[str, ...]" = ()
    mask: "int | None" = None


def _fold(node: Node, top: int) -> _Folded:
    if isinstance(node, Number):
        return _Folded(node.value)
    if isinstance(node, Name):
        return _Folded(None, (node.name,))
    names: "set[str]" = set()
    mask = (1 << 64) - 1
    for t in node.terms:  # a Mask: every term is a number
        f = _fold(t, top)
        if f.const is not None:
            mask &= f.const
        else:
            names.update(f.names)
            if f.mask is not None:
                mask &= f.mask
    if not names:
        return _Folded(mask)
    mask &= top  # new and old have no bits above the watch's length
    if mask == 0:
        return _Folded(0)
    return _Folded(None, tuple(sorted(names)), None if mask == top else mask)


def _truth(node: Node, top: int) -> "bool | None":
    """The node's truth when it does not depend on the values, else None."""
    if is_number(node):
        f = _fold(node, top)
        return None if f.const is None else f.const != 0
    if isinstance(node, Compare):
        left, right = _fold(node.left, top), _fold(node.right, top)
        if left.const is None or right.const is None:
            return None
        return _PY_COMPARE[node.op](left.const, right.const)
    if isinstance(node, Not):
        inner = _truth(node.operand, top)
        return None if inner is None else not inner
    truths = [_truth(t, top) for t in node.terms]
    decisive = node.op == "or"  # a true term decides an or, a false one an and
    if decisive in truths:
        return decisive
    return not decisive if all(t is not None for t in truths) else None


class _Compiler:
    def __init__(self, asm: Assembler, length: int) -> None:
        self.asm = asm
        self.top = (1 << 8 * length) - 1

    def register(self, f: _Folded, into: int, spare: int) -> int:
        """A register holding the folded number (new's or old's own when it
        is just that), computed into ``into`` (``spare`` for a wide mask)."""
        if len(f.names) == 1 and f.mask is None:
            return _REG[f.names[0]]
        emit = self.asm.emit
        emit(BPF_MOV64_REG(into, _REG[f.names[0]]))
        for name in f.names[1:]:
            emit(BPF_ALU64_REG(BPF_AND, into, _REG[name]))
        if f.mask is not None:
            if f.mask <= S32_MAX:
                emit(BPF_ALU64_IMM(BPF_AND, into, f.mask))
            else:
                emit(BPF_LD_IMM64(spare, f.mask), BPF_ALU64_REG(BPF_AND, into, spare))
        return into

    def jump_if(self, op: str, reg: int, value: "int | _Folded", to: str) -> None:
        """``if reg OP value goto to``: an immediate when it fits the
        sign-extended 32 bits, else through r5 or the value's register."""
        emit = self.asm.emit
        if isinstance(value, _Folded):
            emit(BPF_JMP_REG(_JUMP[op], reg, self.register(value, BPF_REG_3, BPF_REG_4), to))
        elif value <= S32_MAX:
            emit(BPF_JMP_IMM(_JUMP[op], reg, value, to))
        else:
            emit(BPF_LD_IMM64(BPF_REG_5, value), BPF_JMP_REG(_JUMP[op], reg, BPF_REG_5, to))

    def branch(self, node: Node, yes: str, no: str) -> None:
        """Code that jumps to ``yes`` when the node is true, else to ``no``."""
        asm = self.asm
        known = _truth(node, self.top)
        if known is not None:
            asm.emit(BPF_JMP_A(yes if known else no))
            return
        if isinstance(node, Logic):
            terms = [t for t in node.terms if _truth(t, self.top) is None]
            for term in terms[:-1]:
                nxt = asm.new_label(node.op)
                if node.op == "and":
                    self.branch(term, nxt, no)
                else:
                    self.branch(term, yes, nxt)
                asm.label(nxt)
            self.branch(terms[-1], yes, no)
            return
        if isinstance(node, Not):
            self.branch(node.operand, no, yes)
            return
        if isinstance(node, Compare):
            op, left, right = node.op, _fold(node.left, self.top), _fold(node.right, self.top)
            if left.const is not None:
                op, left, right = _MIRROR[op], right, left
            reg = self.register(left, BPF_REG_1, BPF_REG_2)
            self.jump_if(op, reg, right if right.const is None else right.const, yes)
        else:  # a number: true when not zero
            reg = self.register(_fold(node, self.top), BPF_REG_1, BPF_REG_2)
            self.jump_if("!=", reg, 0, yes)
        asm.emit(BPF_JMP_A(no))


def compile_condition(condition: Condition, asm: Assembler, length: int,
                      yes: str, no: str) -> None:
    """Emit code that jumps to label ``yes`` when the condition holds for
    ``new`` in r8 and ``old`` in r9 (``length``-byte values), else to ``no``.
    Clobbers r1-r5.

    Raises:
        InvalidCondition: a number does not fit the length.
    """
    condition.check(length)
    _Compiler(asm, length).branch(condition.tree, yes, no)


# --- the program ------------------------------------------------------------------------

class Tally(NamedTuple):
    """The value of a watch's map: what its program saw.

    Attributes:
        hits: hits the program ran on (the event's own count, unless the
            kernel skipped the program: it does while another tracing
            program runs on that CPU).
        matched: hits for which the condition held (each one a sample, when
            the program emits them).
        last: the value the last hit read: the next hit's ``old``.
        faults: hits whose bytes could not be read (the program counts them
            and drops them; they never match).
        unsent: matching hits whose sample the program could not write for
            another reason than a full ring (which the kernel counts lost
            itself): no output event runs on that CPU, or writes nested too
            deep; counted with the samples lost.
    """

    hits: int
    matched: int
    last: int
    faults: int
    unsent: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> "Tally":
        return cls(*TALLY.unpack_from(raw))

    def pack(self) -> bytes:
        return TALLY.pack(*self)


#: The map's value: five u64 in the order of :class:`Tally`.
TALLY = struct.Struct("<5Q")
HITS_AT, MATCHED_AT, LAST_AT, FAULTS_AT, UNSENT_AT = 0, 8, 16, 24, 32

_SIZE = {1: BPF_B, 2: BPF_H, 4: BPF_W, 8: BPF_DW}
_VALUE_AT = -8  # the stack slot the watched bytes are read into


_RAW_AT = -32  # the stack slots the raw data is built in (28 bytes, to -4)


def hit_program(condition: "Condition | None", map_fd: int, length: int, *,
                emit: bool, addr_offset: int, kernel: bool = False,
                output_map_fd: "int | None" = None) -> "list[Insn]":
    """The program run on every hit of one breakpoint.

    It reads the ``length`` watched bytes at the breakpoint's address (the
    context's ``addr``, at ``addr_offset``: ``_uapi.BPF_PERF_EVENT_DATA_ADDR``)
    with ``bpf_probe_read_user`` (``bpf_probe_read_kernel`` when ``kernel``),
    evaluates the condition with ``old`` from the map, and updates the map's
    :class:`Tally` (``hits``, ``matched`` and ``faults`` atomically: the
    events of one watch on every CPU share the map; ``last`` is a plain store).

    Args:
        condition: the condition, or None: every hit matches.
        map_fd: the watch's array map of one entry, value :data:`TALLY`.
        length: the watch's length, 1, 2, 4 or 8.
        emit: return 1 when the condition holds, so the kernel writes the
            sample; False: always return 0 (counting only: no sample is
            written, the event still counts every hit).
        output_map_fd: a ``BPF_MAP_TYPE_PERF_EVENT_ARRAY`` of
            ``PERF_COUNT_SW_BPF_OUTPUT`` events, one per CPU: a matching hit's
            sample is written by the program itself, with
            ``bpf_perf_event_output`` into the event of the CPU it runs on,
            carrying its address, ``old`` and ``new`` (:data:`VALUES_RAW`); the kernel
            fills the sample's other fields (ip, thread, time, CPU, call
            stack) from the hit's registers, and the program returns 0 (the
            breakpoint writes no sample of its own).  ``emit`` is ignored.
        addr_offset: where ``addr`` is in ``struct bpf_perf_event_data``.
        kernel: the watched address is in the kernel.

    Raises:
        InvalidCondition: the condition does not fit the length.
    """
    if length not in _SIZE:
        raise InvalidCondition(f"a watched value is 1, 2, 4 or 8 bytes, not {length}",
                               text=str(condition or ""), column=0)
    asm = Assembler()
    e = asm.emit
    e(BPF_MOV64_REG(BPF_REG_6, BPF_REG_1),                      # r6 = ctx
      BPF_LD_MAP_VALUE(BPF_REG_7, map_fd, 0),                   # r7 = &tally
      BPF_MOV64_IMM(BPF_REG_1, 1),
      BPF_ATOMIC_OP(BPF_DW, BPF_ADD, BPF_REG_7, BPF_REG_1, HITS_AT),
      BPF_MOV64_REG(BPF_REG_1, BPF_REG_10),                     # dst: the stack
      BPF_ALU64_IMM(BPF_ADD, BPF_REG_1, _VALUE_AT),
      BPF_MOV64_IMM(BPF_REG_2, length),                         # size
      BPF_LDX_MEM(BPF_DW, BPF_REG_3, BPF_REG_6, addr_offset),   # src: ctx->addr
      BPF_EMIT_CALL(BPF_FUNC_probe_read_kernel if kernel else BPF_FUNC_probe_read_user),
      BPF_JMP_IMM(BPF_JNE, BPF_REG_0, 0, "fault"),
      BPF_LDX_MEM(_SIZE[length], BPF_REG_8, BPF_REG_10, _VALUE_AT))  # r8 = new
    if output_map_fd is not None or (condition is not None and condition.uses_old):
        e(BPF_LDX_MEM(BPF_DW, BPF_REG_9, BPF_REG_7, LAST_AT))   # r9 = old
    e(BPF_STX_MEM(BPF_DW, BPF_REG_7, BPF_REG_8, LAST_AT))       # last = new
    if condition is None:
        e(BPF_JMP_A("match"))
    else:
        compile_condition(condition, asm, length, "match", "drop")
    asm.label("match")
    e(BPF_MOV64_IMM(BPF_REG_1, 1),
      BPF_ATOMIC_OP(BPF_DW, BPF_ADD, BPF_REG_7, BPF_REG_1, MATCHED_AT))
    if output_map_fd is not None:
        # the raw data, in 4-byte stores (the stack is accessed aligned):
        # kind, old (low, high), new (low, high)
        e(BPF_ST_MEM(BPF_W, BPF_REG_10, _RAW_AT, VALUES_KIND),
          BPF_LDX_MEM(BPF_DW, BPF_REG_2, BPF_REG_6, addr_offset))
        for at, reg in ((_RAW_AT + 4, BPF_REG_2), (_RAW_AT + 12, BPF_REG_9),
                        (_RAW_AT + 20, BPF_REG_8)):
            e(BPF_STX_MEM(BPF_W, BPF_REG_10, reg, at),
              BPF_MOV64_REG(BPF_REG_1, reg),
              BPF_ALU64_IMM(BPF_RSH, BPF_REG_1, 32),
              BPF_STX_MEM(BPF_W, BPF_REG_10, BPF_REG_1, at + 4))
        e(BPF_MOV64_REG(BPF_REG_1, BPF_REG_6),                  # ctx: the hit's registers
          BPF_LD_MAP_FD(BPF_REG_2, output_map_fd),
          # flags: BPF_F_CURRENT_CPU, as a 32-bit move of -1 (zero-extended)
          BPF_MOV32_IMM(BPF_REG_3, BPF_F_CURRENT_CPU - (1 << 32)),
          BPF_MOV64_REG(BPF_REG_4, BPF_REG_10),
          BPF_ALU64_IMM(BPF_ADD, BPF_REG_4, _RAW_AT),
          BPF_MOV64_IMM(BPF_REG_5, VALUES_RAW.size - 4),
          BPF_EMIT_CALL(BPF_FUNC_perf_event_output),
          BPF_JMP_IMM(BPF_JEQ, BPF_REG_0, 0, "sent"),
          # a full ring: the kernel counts the sample lost itself
          BPF_JMP_IMM(BPF_JEQ, BPF_REG_0, -errno.ENOSPC, "sent"),
          BPF_MOV64_IMM(BPF_REG_1, 1),
          BPF_ATOMIC_OP(BPF_DW, BPF_ADD, BPF_REG_7, BPF_REG_1, UNSENT_AT))
        asm.label("sent")
        e(BPF_MOV64_IMM(BPF_REG_0, 0),
          BPF_EXIT_INSN())
    else:
        e(BPF_MOV64_IMM(BPF_REG_0, 1 if emit else 0),
          BPF_EXIT_INSN())
    asm.label("drop")
    e(BPF_MOV64_IMM(BPF_REG_0, 0),
      BPF_EXIT_INSN())
    asm.label("fault")
    e(BPF_MOV64_IMM(BPF_REG_1, 1),
      BPF_ATOMIC_OP(BPF_DW, BPF_ADD, BPF_REG_7, BPF_REG_1, FAULTS_AT),
      BPF_MOV64_IMM(BPF_REG_0, 0),
      BPF_EXIT_INSN())
    return asm.assemble()
