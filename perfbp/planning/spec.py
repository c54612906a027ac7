"""Watch specifications as users type them: ``[mem:]ADDR[/LEN][:ACCESS][:MOD]``.

perf's own spelling is accepted as perf writes it (``mem:0x404118/8:w``,
``mem:0x404118/4:rw:u``).  Defaults differ from perf's on purpose, to match a
watchpoint user's expectations (gdb's ``watch``): the access defaults to
``w`` (perf: ``rw``) and the length to 8 bytes (perf: 4).

Two spellings, two meanings for ranges the debug registers cannot take in
one piece (longer than 8 bytes, an odd length, misaligned):

* ``ADDR/LEN`` is a *range*: perfbp splits it over several registers, as gdb
  does (``0x1001/8`` takes four: 1+2+4+1 bytes), and counts it as one watch.
* ``mem:ADDR/LEN`` is perf's syntax for *one* breakpoint: exactly one debug
  register, so such a range is refused with the reason and the fix.

Pure Python: parsing only; checking against the architecture's rules happens
when the :class:`~perfbp.Breakpoint` is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..kernel.breakpoint import Breakpoint
from ..errors import InvalidBreakpoint

DEFAULT_ACCESS = "w"
DEFAULT_LENGTH = 8

_NUM = r"(?:0[xX][0-9a-fA-F]+|[0-9]+)"
_SYMBOL = re.compile(
    rf"(?P<sym>[A-Za-z_.$][A-Za-z0-9_.$]*(?:\[\s*(?:0[xX][0-9a-fA-F]+|[0-9]+)\s*\]|\.[A-Za-z_$][A-Za-z0-9_$]*)*)"
    rf"(?:@(?P<obj>[^+/:@]+))?(?:\+(?P<off>{_NUM}))?")
_SPEC = re.compile(
    rf"^(?:mem:)?(?P<addr>[^/:]+)(?:/(?P<len>[^:]*))?(?::(?P<acc>[^:]*))?(?::(?P<mod>[^:]*))?$")


@dataclass(frozen=True)
class WatchSpec:
    """One parsed ``-w`` argument.

    Attributes:
        text: what the user typed.
        address: the address.
        length: bytes to watch (None: not given; the default applies).
        access: ``w``, ``rw``, ``x`` or ``r``.
        exclude_kernel: from a ``:u`` / ``:k`` modifier, or None (default:
            user addresses exclude kernel-mode hits).
    """

    text: str
    address: int
    length: "int | None"
    access: str
    exclude_kernel: "bool | None" = None
    exact: bool = False
    symbol: "str | None" = None
    offset: int = 0
    object: "str | None" = None

    def resolved(self, address: int, size: int) -> "WatchSpec":
        """This spec with its symbol resolved to ``address`` (the symbol's
        start, before ``+OFF``); LEN defaults to the symbol's size."""
        from dataclasses import replace

        length = self.length
        if length is None and self.access != "x":
            length = size - self.offset if size > self.offset else DEFAULT_LENGTH
        return replace(self, address=address + self.offset, length=length, symbol=None,
                       object=None)

    @property
    def label(self) -> str:
        return self.text

    def pieces(self) -> "list[Breakpoint]":
        """The breakpoints that watch this range: one, or (for a range
        written without ``mem:``) the fewest aligned pieces that cover it.

        Raises:
            InvalidBreakpoint: the range cannot be watched (execute
                breakpoints and ``mem:`` specs take exactly one register).
        """
        if self.symbol is not None:
            raise InvalidBreakpoint(f"watch '{self.text}': the symbol {self.symbol!r} "
                                    f"must be resolved in the target first")
        if self.exact or self.access == "x":
            return [self.breakpoint()]
        from .regions import split_range

        length = DEFAULT_LENGTH if self.length is None else self.length
        if self.access == "r":
            return [self.breakpoint()]  # refused with the architecture's reason
        try:
            parts = split_range(self.address, length)
        except InvalidBreakpoint as exc:
            raise InvalidBreakpoint(f"watch '{self.text}': {exc.message}") from None
        out = []
        for addr, ln in parts:
            try:
                out.append(Breakpoint(addr, ln, self.access))
            except InvalidBreakpoint as exc:
                raise InvalidBreakpoint(f"watch '{self.text}': {exc.message}",
                                        **exc.context) from None
        return out

    def breakpoint(self) -> Breakpoint:
        """The :class:`Breakpoint` this spec asks for.

        Raises:
            InvalidBreakpoint: with the rule broken, naming the spec.
        """
        length = self.length
        if self.access == "x":
            length = Breakpoint.execute(self.address).length if length is None else length
        elif length is None:
            length = DEFAULT_LENGTH
        try:
            return Breakpoint(self.address, length, self.access)
        except InvalidBreakpoint as exc:
            hint = ""
            if self.exact and self.access != "x" and self.access != "r":
                hint = (f" (mem: asks for exactly one debug register, as in perf; "
                        f"write {self.address:#x}/{length}:{self.access} without "
                        f"mem: to let perfbp split the range over several)")
            raise InvalidBreakpoint(f"watch '{self.text}': {exc.message}{hint}",
                                    **exc.context) from None


def _parse_access(text: str, spec: str) -> str:
    letters = text.lower()
    if not letters or any(ch not in "rwx" for ch in letters) or len(set(letters)) != len(letters):
        raise InvalidBreakpoint(
            f"watch '{spec}': access '{text}' is not one of w, rw, x, r "
            f"(write, read-or-write, execute, read); for example mem:0x404040/8:w")
    kinds = set(letters)
    if "x" in kinds and len(kinds) > 1:
        raise InvalidBreakpoint(
            f"watch '{spec}': access '{text}' mixes execute with data access; "
            f"use x on code, or w / rw on data, as two watches")
    if kinds == {"r", "w"}:
        return "rw"
    return letters


#: the longest spec accepted (no address, name or range needs more)
MAX_SPEC = 256


def parse(text: str) -> WatchSpec:
    """Parse one watch spec.

    Raises:
        InvalidBreakpoint: naming the part that is wrong and a correct example.
    """
    if len(text) > MAX_SPEC or not text.isprintable():
        import unicodedata

        control = any(unicodedata.category(c) == "Cc" for c in text)
        what = (f"is {len(text):,} characters long" if len(text) > MAX_SPEC else
                "contains control characters" if control else
                "contains unprintable characters")
        raise InvalidBreakpoint(f"watch {text[:40]!r}{'...' if len(text) > 40 else ''} "
                                f"{what}: a spec is [mem:]ADDR|SYMBOL[@OBJECT][+OFF][/LEN]"
                                f"[:ACCESS][:u|k], at most {MAX_SPEC} characters")
    spec = text.strip()
    m = _SPEC.match(spec)
    if not m:
        raise InvalidBreakpoint(
            f"watch '{text}' is not of the form [mem:]ADDR[/LEN][:ACCESS], "
            f"for example mem:0x404040/8:w")
    addr_text, len_text, acc_text, mod_text = m.group("addr", "len", "acc", "mod")
    symbol = None
    obj = None
    offset = 0
    if re.fullmatch(_NUM, addr_text):
        address = int(addr_text, 0)
    else:
        sm = _SYMBOL.fullmatch(addr_text)
        if not sm:
            raise InvalidBreakpoint(
                f"watch '{text}': '{addr_text}' is neither an address (0x404040) nor "
                f"a symbol name (counter, counter+8)")
        if spec.startswith("mem:"):
            raise InvalidBreakpoint(
                f"watch '{text}': perf's mem: syntax takes an address; drop mem: to "
                f"watch the symbol {sm.group('sym')!r}")
        symbol = sm.group("sym")
        obj = sm.group("obj")
        offset = int(sm.group("off"), 0) if sm.group("off") else 0
        address = 0
    length = None
    if len_text is not None:
        if not re.fullmatch(_NUM, len_text):
            raise InvalidBreakpoint(
                f"watch '{text}': length '{len_text}' is not a number; use 1, 2, 4 or 8")
        length = int(len_text, 0)
    access = DEFAULT_ACCESS
    exclude_kernel = None
    if acc_text is not None:
        if acc_text in ("u", "k", "uk", "ku") and mod_text is None:
            mod_text, acc_text = acc_text, None
        else:
            access = _parse_access(acc_text, text)
    if mod_text is not None:
        if mod_text == "u":
            exclude_kernel = True
        elif mod_text in ("k", "uk", "ku"):
            exclude_kernel = False
        else:
            raise InvalidBreakpoint(
                f"watch '{text}': modifier '{mod_text}' is not u (user-mode hits "
                f"only, the default) or k (count kernel-mode hits too)")
    return WatchSpec(spec, address, length, access, exclude_kernel,
                     exact=spec.startswith("mem:"), symbol=symbol, offset=offset, object=obj)
