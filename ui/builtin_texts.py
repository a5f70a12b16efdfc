"""Gradio's own words on the page (the upload box's "Drop File Here - or - Click to Upload") in the page's language.

Gradio translates them in the browser by the browser's locale (svelte-i18n, navigator.language), which Python
cannot set and which need not match Danlu's language switch: an English browser showed English upload boxes on
the Chinese page. A small script in the page's head (app.py passes head()) rewrites those texts to the language
the switch (#lang) holds, whenever Gradio draws them and whenever the switch changes.
"""

from __future__ import annotations

import json

# Gradio's English text -> its own Chinese (gradio/templates/frontend/assets/zh-CN-*.js), trimmed as shown
GRADIO_TEXTS_ZH = {
    "Drop File Here": "将文件拖放到此处",
    "Click to Upload": "点击上传",
    "- or -": "- 或 -",
    "Drop Image Here": "将图像拖放到此处",
}

_SCRIPT = """<script>
(() => {
  const toZh = %s;
  const toEn = Object.fromEntries(Object.entries(toZh).map(([en, zh]) => [zh, en]));
  let queued = false;
  function translate() {
    queued = false;
    const lang = document.querySelector("#lang input:checked")?.value;
    const table = lang === "zh" ? toZh : lang === "en" ? toEn : null;
    if (!table) return;
    for (const box of document.querySelectorAll('[data-testid="upload-text"]')) {
      const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeValue.trim();
        if (table[text]) node.nodeValue = node.nodeValue.replace(text, table[text]);
      }
    }
  }
  const later = () => { if (!queued) { queued = true; requestAnimationFrame(translate); } };
  new MutationObserver(later).observe(document.documentElement,
                                      {subtree: true, childList: true, characterData: true});
  document.addEventListener("change", later, true);
})();
</script>"""


def head() -> str:
    """The script for Blocks.launch(head=...)."""
    return _SCRIPT % json.dumps(GRADIO_TEXTS_ZH, ensure_ascii=False)
