"""Text contrast of a rendered page, measured in the browser (WCAG 2.x AA).

For every visible element that carries text of its own (HTML text and SVG <text>), the page
reports the colour the browser computed for it (`color`, or `fill` in SVG, times every
opacity on the way up) and what it is painted on: the layers under its centre as the
browser stacks them (`elementsFromPoint`: background colours of HTML boxes, fills of SVG
shapes), composed over the canvas. Ratios follow WCAG's relative luminance; large text (at
least 24 px, or 18.66 px and bold, measured as rendered, so an SVG scaled up or down counts
at the size it is shown) needs 3:1, other text 4.5:1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.browser import Page

AA_TEXT, AA_LARGE = 4.5, 3.0

_MEASURE = r"""(() => {
  const rgba = s => {
    const m = /rgba?\(([^)]+)\)/.exec(s || "");
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a), a: 1});
  const opacities = new Map();
  const opacity = el => {  // the product of the opacities of el and its ancestors
    if (!el || el.nodeType !== 1) return 1;
    if (!opacities.has(el)) {
      opacities.set(el, Number(getComputedStyle(el).opacity) * opacity(el.parentElement));
    }
    return opacities.get(el);
  };
  const SHAPES = new Set(["rect", "circle", "ellipse", "path", "polygon"]);
  const paint = el => {  // the colour a layer paints, or null; "image" when it is not a colour
    const cs = getComputedStyle(el);
    if (el instanceof SVGElement) {
      if (!SHAPES.has(el.tagName)) return null;
      const c = rgba(cs.fill);
      return c && {...c, a: c.a * Number(cs.fillOpacity) * opacity(el)};
    }
    if (cs.backgroundImage !== "none") return "image";
    const c = rgba(cs.backgroundColor);
    return c && c.a > 0 ? {...c, a: c.a * opacity(el)} : null;
  };
  const canvas = () => {  // the root's background, else the body's (CSS propagates it), over white
    const white = {r: 255, g: 255, b: 255, a: 1};
    for (const el of [document.documentElement, document.body]) {
      const c = rgba(getComputedStyle(el).backgroundColor);
      if (c && c.a > 0) return over(c, white);
    }
    return white;
  };
  const ownText = el => [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  // Elements that can show: not hidden, not inside a closed <details> (but its summary).
  const shown = el => {
    const up = el.parentElement;
    return !el.hidden && !(up && up.tagName === "DETAILS" && !up.open && el.tagName !== "SUMMARY");
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_ELEMENT,
    {acceptNode: el => shown(el) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT});
  const found = [];
  for (let el = walker.nextNode(); el; el = walker.nextNode()) {
    const svg = el instanceof SVGElement;
    if (svg ? !["text", "tspan"].includes(el.tagName) : ["SCRIPT", "STYLE"].includes(el.tagName)) continue;
    if (!ownText(el) || !el.getClientRects().length) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility !== "visible") continue;
    let box = el.getBoundingClientRect();
    const cx = box.left + box.width / 2, cy = box.top + box.height / 2;
    if (cx < 0 || cy < 0 || cx >= innerWidth || cy >= innerHeight) {  // bring it into view
      el.scrollIntoView({block: "center", inline: "center"});
      box = el.getBoundingClientRect();
    }
    const x = Math.min(innerWidth - 1, Math.max(0, box.left + box.width / 2));
    const y = Math.min(innerHeight - 1, Math.max(0, box.top + box.height / 2));
    const stack = document.elementsFromPoint(x, y);
    const at = stack.findIndex(e => e === el || el.contains(e) || (svg && e === el.closest("svg")));
    if (at < 0) continue;  // covered or clipped away: nobody sees it
    const layers = [];
    let unknown = false;
    for (const e of stack.slice(at)) {
      if (e === document.documentElement) break;
      const p = paint(e);
      if (p === "image") { unknown = true; break; }
      if (p) layers.push(p);
      if (p && p.a >= 1) break;
    }
    let bg = canvas();
    for (const layer of layers.reverse()) bg = over(layer, bg);
    const fg = rgba(svg ? cs.fill : cs.color);
    if (!fg) continue;
    fg.a *= opacity(el) * (svg ? Number(cs.fillOpacity) : 1);
    const scale = svg ? (el.getScreenCTM() || {a: 1}).a : 1;
    found.push({text: el.textContent.trim().slice(0, 40), tag: el.tagName.toLowerCase(),
                id: el.id || el.className.baseVal || el.className || "",
                fg: over(fg, bg), bg, unknown,
                size: parseFloat(cs.fontSize) * scale, weight: parseInt(cs.fontWeight, 10)});
  }
  scrollTo(0, 0);
  return found;
})()"""


def luminance(c: dict[str, float]) -> float:
    def channel(v: float) -> float:
        s = v / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4
    return 0.2126 * channel(c["r"]) + 0.7152 * channel(c["g"]) + 0.0722 * channel(c["b"])


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@dataclass(frozen=True)
class Text:
    """One piece of text as shown: where, its contrast, and what WCAG AA asks of it."""

    text: str
    where: str
    ratio: float
    large: bool
    unknown: bool  # painted over an image or gradient: not measurable here

    @property
    def needed(self) -> float:
        return AA_LARGE if self.large else AA_TEXT

    def __str__(self) -> str:
        return f"{self.where} {self.text!r}: {self.ratio:.2f}:1 (needs {self.needed}:1)"


def texts(page: Page) -> list[Text]:
    """Every visible text of the page with its measured contrast."""
    found: list[dict[str, Any]] = page.evaluate(_MEASURE)
    return [Text(text=f["text"], where=f"<{f['tag']} {f['id']}>".replace(" >", ">"),
                 ratio=ratio(f["fg"], f["bg"]),
                 large=f["size"] >= 24 or (f["size"] >= 18.66 and f["weight"] >= 700),
                 unknown=f["unknown"]) for f in found]


def failures(measured: list[Text]) -> list[Text]:
    """Texts below WCAG AA (or on a background that cannot be measured)."""
    return [t for t in measured if t.unknown or t.ratio < t.needed]
