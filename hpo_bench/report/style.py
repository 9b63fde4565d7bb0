"""Stable looks for tuners, and paper/slides styles and widths for figures.

A tuner's colour, marker and dash pattern depend **only on its label** (and, for a label that
names no known method, on the registered tuner and method behind it when the caller passes
them): the same label looks the same in every figure and in every subset of tuners, and never
depends on which other tuners are drawn. Colours come from fixed qualitative palettes, one hue
range per *method family*, so that families read apart at a glance and members of a family
share a hue range:

=================  ===============================================  ========================
family             labels (first word of the label)                  colours, dash
=================  ===============================================  ========================
``implicit``       exact, cg, neumann, fixed_point, identity, ...     blues, solid
``unrolled``       reverse, truncated, forward                        greens, dash-dot
``stochastic``     soba, saba, amigo, stocbio, ttsa, bsa, mrbo, ...   purples and wines, long
                                                                      dashes
``non-smooth``     implicit_support, ista, cd, ...                    teals, dotted dashes
``optuna``         tpe, cmaes, qmc, nsga, gp                          oranges and reds, dashed
``grid-random``    grid, grid_eig, random                             greys and browns, dotted
``other``          anything else                                      a mixed dark palette
=================  ===============================================  ========================

Within a family, a method's own name (``cg``, ``tpe``) takes a fixed colour and marker, distinct
from every other method of the family; a variant (``cg-gd100``, ``tpe-mv``) keeps its method's hue,
lighter or darker, with another marker, both chosen by a hash of the label (SHA-1, not Python's
salted ``hash``); a label that names no method gets a hashed colour and marker of its family. Every family also has its own dash pattern, so a figure survives
greyscale printing: the dash gives the family, the marker the tuner. Hashed looks can coincide for
two labels of one family; :func:`set_look` pins a label's look by hand.

Widths (:func:`parse_width`) are inches or a fraction of a named paper template's
``\\linewidth`` (:data:`TEMPLATES`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Look", "FAMILIES", "TEMPLATES", "STYLES", "family_of", "look_for", "looks_for", "set_look",
           "parse_width", "StyleError", "rc_for"]


class StyleError(ValueError):
    """A style, width or template the figures do not know (the message lists the known ones)."""


@dataclass(frozen=True)
class Look:
    """How one tuner is drawn: ``color`` (hex), ``marker`` (matplotlib), ``dashes`` (on/off in
    line widths; ``()`` is solid) and its ``family``."""

    color: str
    marker: str
    dashes: tuple[float, ...]
    family: str

    @property
    def plotly_dash(self) -> str:
        """The same pattern as a plotly ``line.dash`` value (``"solid"`` or a px list)."""
        if not self.dashes:
            return "solid"
        return ", ".join(f"{2 * d:g}px" for d in self.dashes)


#: Family -> (palette, dash pattern, method words in their fixed palette slots).
#: Palettes: Paul Tol's qualitative colour schemes (bright, muted, dark), grouped by hue.
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...]]] = {
    "implicit": (("#004488", "#4477AA", "#66CCEE", "#332288", "#6699CC", "#225577"), (),
                 ("exact", "cg", "neumann", "fixed_point", "identity", "seed_notebook")),
    "unrolled": (("#117733", "#228833", "#44AA99", "#999933", "#225522"), (5.0, 1.5, 1.0, 1.5),
                 ("reverse", "truncated", "forward")),
    "stochastic": (("#AA3377", "#882255", "#CC6677", "#EE99AA", "#663366", "#994455"), (7.0, 2.0),
                   ("soba", "saba", "amigo", "stocbio", "ttsa", "bsa", "mrbo", "vrbo", "srba", "f2sa")),
    "non-smooth": (("#009988", "#33BBEE", "#005F5F", "#77AADD"), (3.0, 1.0, 1.0, 1.0, 1.0, 1.0),
                   ("implicit_support", "implicit_forward", "ista", "fista", "cd")),
    "optuna": (("#EE7733", "#CC3311", "#DDAA33", "#BB5566", "#EE3377"), (4.0, 2.0),
               ("tpe", "cmaes", "qmc", "nsga", "gp")),
    "grid-random": (("#555555", "#997700", "#888888", "#664422"), (1.0, 1.5),
                    ("random", "grid", "grid_eig")),
    "other": (("#000000", "#6F4E7C", "#0F8554", "#A05A2C", "#1D6996"), (2.0, 1.0, 6.0, 1.0), ()),
}

#: Markers, most legible first (filled shapes survive greyscale and small sizes).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")

_WORDS = {w: fam for fam, (_, _, words) in FAMILIES.items() for w in words}
_TUNER_FAMILY = {"tpe": "optuna", "cmaes": "optuna", "random": "grid-random", "grid": "grid-random",
                 "grid_eig": "grid-random", "seed_notebook": "implicit"}
_pinned: dict[str, Look] = {}


def _digest(label: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{salt}:{label}".encode()).digest()[:8], "big")


def _word(label: str) -> str | None:
    """The known method word a label starts with: ``"cg-gd100"`` -> ``"cg"``, ``"neumann20"`` -> ``"neumann"``."""
    low = label.strip().lower()
    for w in sorted(_WORDS, key=len, reverse=True):  # longest first: grid_eig before grid
        if low == w or re.match(rf"{re.escape(w)}(?![a-z_])", low):
            return w
    return None


def family_of(label: str, tuner: str | None = None, method: str | None = None) -> str:
    """The method family of a tuner label (see the module docstring).

    The label's first word decides; a label that names no known method falls back on ``method``
    (a gradient tuner's hypergradient method) and then on the registered ``tuner`` name.
    """
    w = _word(label)
    if w is not None:
        return _WORDS[w]
    if method is not None and str(method).lower() in _WORDS:
        return _WORDS[str(method).lower()]
    if tuner is not None:
        t = str(tuner).lower()
        if t in _TUNER_FAMILY:
            return _TUNER_FAMILY[t]
        if t in _WORDS:
            return _WORDS[t]
    return "other"


def look_for(label: str, tuner: str | None = None, method: str | None = None) -> Look:
    """The :class:`Look` of ``label``: a function of the label alone (plus ``tuner``/``method``
    where the label names no known method), never of the other labels in a figure."""
    if label in _pinned:
        return _pinned[label]
    fam = family_of(label, tuner, method)
    palette, dashes, words = FAMILIES[fam]
    w = _word(label)
    nc, nm = len(palette), len(MARKERS)
    if w is not None and w in words and label.strip().lower() == w:  # a method's own name: fixed slots
        i = words.index(w)
        colour, marker = i % nc, i % nm
    elif w is not None and w in words:  # a variant ("cg-gd100"): its method's hue, lighter or darker, another marker
        i = words.index(w)
        marker = (i + 1 + _digest(label, "m") % (nm - 1)) % nm
        return Look(_shade(palette[i % nc], _digest(label, "c")), MARKERS[marker], dashes, fam)
    else:
        colour, marker = _digest(label, "c") % nc, _digest(label, "m") % nm
    return Look(palette[colour], MARKERS[marker], dashes, fam)


def _shade(hex_colour: str, h: int) -> str:
    """The same hue with its lightness moved by 0.16 or 0.26 (up or down, by ``h``), kept in [0.18, 0.8]."""
    import colorsys

    r, g, b = (int(hex_colour[k:k + 2], 16) / 255 for k in (1, 3, 5))
    hue, light, sat = colorsys.rgb_to_hls(r, g, b)
    step = (0.16, 0.26)[(h >> 1) & 1]
    up = light + step <= 0.8 and (h & 1 or light - step < 0.18)
    light = min(max(light + step if up else light - step, 0.18), 0.8)
    r, g, b = colorsys.hls_to_rgb(hue, light, sat)
    return "#" + "".join(f"{round(v * 255):02X}" for v in (r, g, b))


def looks_for(labels: list[str], tuners: dict[str, str] | None = None,
              methods: dict[str, str] | None = None) -> dict[str, Look]:
    """:func:`look_for` of each label (``tuners``/``methods``: label -> registered tuner / method)."""
    tuners, methods = tuners or {}, methods or {}
    return {lab: look_for(lab, tuners.get(lab), methods.get(lab)) for lab in labels}


def set_look(label: str, *, color: str | None = None, marker: str | None = None,
             dashes: tuple[float, ...] | None = None) -> Look:
    """Pin the look of ``label`` for this process (unset fields keep their default); returns it."""
    base = look_for(label)
    if marker is not None and marker not in MARKERS:
        raise StyleError(f"marker must be one of {list(MARKERS)}, but got {marker!r}")
    if color is not None and not re.fullmatch(r"#[0-9A-Fa-f]{6}", color):
        raise StyleError(f"color must look like #RRGGBB, but got {color!r}")
    look = Look(color or base.color, marker or base.marker, base.dashes if dashes is None else tuple(dashes),
                base.family)
    _pinned[label] = look
    return look


# ----------------------------------------------------------------- styles and widths
#: Named paper templates: (``\\textwidth``, ``\\columnwidth``) in inches (one-column templates: equal).
TEMPLATES: dict[str, tuple[float, float]] = {
    "neurips": (5.5, 5.5),   # neurips_20xx.sty: \textwidth 5.5in, one column
    "iclr": (5.5, 5.5),      # iclr20xx_conference.sty: \textwidth 5.5in, one column
    "icml": (6.75, 3.25),    # icml20xx.sty: \textwidth 6.75in, two columns of 3.25in
    "aistats": (6.75, 3.25),  # aistats20xx.sty: two columns of 3.25in
    "jmlr": (6.0, 6.0),      # jmlr2e.sty: one column, about 6in
}

#: Style name -> rc overrides, default width (inches) and panel aspect (height / width of a panel).
STYLES: dict[str, dict[str, Any]] = {
    "paper": {"rc": {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
                     "ytick.labelsize": 7, "legend.fontsize": 7, "lines.linewidth": 1.2, "lines.markersize": 3.5,
                     "axes.linewidth": 0.6, "grid.linewidth": 0.4},
              "width": 5.5, "aspect": 0.72, "markevery": 6},
    "slides": {"rc": {"font.size": 14, "axes.titlesize": 15, "axes.labelsize": 14, "xtick.labelsize": 12,
                      "ytick.labelsize": 12, "legend.fontsize": 12, "lines.linewidth": 2.4, "lines.markersize": 7,
                      "axes.linewidth": 1.0, "grid.linewidth": 0.7},
               "width": 10.0, "aspect": 0.62, "markevery": 5},
}
_COMMON_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "figure.dpi": 100, "savefig.dpi": 200,
              "axes.grid": True, "grid.color": "0.88", "axes.spines.top": False, "axes.spines.right": False,
              "axes.titley": 1.0, "legend.frameon": False}


def rc_for(style: str) -> dict[str, Any]:
    """matplotlib rc parameters of a named style (fonts embedded as TrueType, no creation date)."""
    if style not in STYLES:
        raise StyleError(f"style must be one of {sorted(STYLES)}, but got {style!r}")
    return {**_COMMON_RC, **STYLES[style]["rc"]}


_WIDTH_RE = re.compile(r"^\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>in|cm|mm|pt)?)\s*$")
_TPL_RE = re.compile(r"^\s*(?:(?P<frac>\d+(?:\.\d*)?|\.\d+)\s*\*?\s*)?(?P<tpl>[a-z]+)(?::(?P<which>column|text))?\s*$")
_UNITS = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4, "pt": 1 / 72.27}


def parse_width(width: str | float | None, style: str = "paper") -> float:
    """A figure width in inches.

    Accepted: a number (inches), ``"3.25in"``, ``"8cm"``, ``"90mm"``, ``"234pt"``; or a named template's
    line width, optionally scaled: ``"icml"`` / ``"icml:column"`` (one column of a two-column
    template), ``"icml:text"`` (the full text width, for ``figure*``), ``"0.5*neurips"``. ``None``:
    the style's default width.

    Raises:
        StyleError: an unknown template or style, a malformed value or a width outside (0, 40] inches.
    """
    if width is None:
        if style not in STYLES:
            raise StyleError(f"style must be one of {sorted(STYLES)}, but got {style!r}")
        return float(STYLES[style]["width"])
    if isinstance(width, (int, float)):
        inches = float(width)
    else:
        m = _WIDTH_RE.match(str(width))
        t = None if m else _TPL_RE.match(str(width).lower())
        if m:
            inches = float(m["num"]) * _UNITS[m["unit"] or "in"]
        elif t and t["tpl"] in TEMPLATES:
            text, column = TEMPLATES[t["tpl"]]
            inches = (float(t["frac"]) if t["frac"] else 1.0) * (text if t["which"] == "text" else column)
        else:
            raise StyleError(f"width must be inches (3.25, 3.25in, 8cm, 234pt) or [FRACTION*]TEMPLATE[:column|text] "
                             f"with a template in {sorted(TEMPLATES)}, but got {width!r}")
    if not 0 < inches <= 40:
        raise StyleError(f"`0 < width <= 40` inches must hold, but got {width!r} ({inches:g} in)")
    return inches
