"""A letter's HTML made safe to show: nh3 (the Rust ammonia sanitiser) with an allow-list.

Letters are hostile HTML. What survives is text formatting, tables, links and inline data: images;
everything that runs or fetches is removed: scripts and event handlers, <style>, <meta>, <base>,
<form>, <iframe>, <object>, <svg>, srcset, background=, any remote or cid: image, and every style
attribute that names a URL or an expression. The page serving the result adds a CSP
(`default-src 'none'; img-src data:`) and a sandboxed frame, so a miss here still cannot load or run
anything; this layer keeps the letter readable and keeps tracking pixels out of the HTML itself.
"""

from __future__ import annotations

import re

import nh3

TAGS = frozenset({
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
})
# Removed with their content, not just their tags: what they hold is code or a document of its own.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "title", "head", "template", "noscript", "iframe", "object",
                                  "embed", "svg", "math", "textarea", "select", "button"})
_LAYOUT = {"align", "valign", "width", "height", "bgcolor", "border", "cellpadding", "cellspacing", "colspan",
           "rowspan", "nowrap"}
ATTRIBUTES = {
    "*": {"title", "dir", "lang", "style"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "border", "align"},
    "font": {"color", "face", "size"},
    **{tag: _LAYOUT for tag in ("table", "tbody", "thead", "tfoot", "tr", "td", "th", "col", "colgroup")},
    **{tag: {"align"} for tag in ("div", "p", "h1", "h2", "h3", "h4", "h5", "h6", "caption", "hr")},
    "ol": {"start", "type"},
    "li": {"value"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})
# CSS properties kept in style attributes: none of them takes a URL.
STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "text-align", "text-decoration", "text-indent", "text-transform", "letter-spacing", "white-space",
    "vertical-align", "width", "max-width", "min-width", "height", "margin", "margin-top", "margin-right",
    "margin-bottom", "margin-left", "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
    "border-width", "border-collapse", "border-spacing", "border-radius", "display", "direction",
})
# A style attribute naming a URL, an old IE expression or a CSS escape (which could spell either) goes whole.
_HOSTILE_STYLE_RE = re.compile(r"(?i)url\s*\(|expression\s*\(|image-set|@import|behavior|binding|\\")
_INLINE_IMAGE_RE = re.compile(r"(?i)data:image/(?:png|gif|jpeg|jpg|webp|bmp);")


def _attribute(tag: str, name: str, value: str) -> str | None:
    if name == "style" and _HOSTILE_STYLE_RE.search(value):
        return None
    if tag == "img" and name == "src" and not _INLINE_IMAGE_RE.match(value.strip()):
        return None  # a remote image is a tracking pixel; cid: parts are not served: only inline data stays
    if name == "href" and value.strip().lower().startswith("data:"):
        return None  # a document of its own, not a link
    return value


_CLEANER = nh3.Cleaner(
    tags=set(TAGS), clean_content_tags=set(DROPPED_WITH_CONTENT), attributes={k: set(v) for k, v in ATTRIBUTES.items()},
    attribute_filter=_attribute, url_schemes=set(URL_SCHEMES), url_relative="deny",
    filter_style_properties=set(STYLE_PROPERTIES), link_rel="noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
)


def clean(html: str) -> str:
    """The letter's HTML with only the allow-listed tags, attributes, URL schemes and styles."""
    return _CLEANER.clean(html)
