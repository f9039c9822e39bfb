"""How the web app looks and what runs in the browser: CSS, the theme, and the JavaScript of events."""
from __future__ import annotations

import base64

import gradio as gr

from acne import history
from acne.config import PROJECT_DIR

BACKGROUND = PROJECT_DIR / "images" / "background.jpg"

CSS = """
body { background: #f4f6f5 url("__BACKGROUND__") center top / cover no-repeat !important; min-height: 100vh; }
gradio-app { background: transparent !important; }
.gradio-container { background: transparent !important; max-width: 1180px !important; margin: 0 auto; }
#app-header { padding: 22px 26px; margin-bottom: 6px; border-radius: 18px;
  background: linear-gradient(120deg, rgba(15,118,110,0.92), rgba(45,140,150,0.88));
  color: #fff; box-shadow: 0 6px 24px rgba(15,80,80,0.15); }
#app-header h1 { margin: 0; font-size: 1.7rem; font-weight: 700; letter-spacing: 0.01em; color: #fff; }
#app-header p { margin: 6px 0 0; opacity: 0.92; font-size: 0.98rem; color: #fff; }
#app-header .badge { display: inline-block; margin-top: 10px; padding: 3px 10px; border-radius: 999px;
  background: rgba(255,255,255,0.2); color: #fff; font-size: 0.82rem; }
.panel { background: rgba(255,255,255,0.78) !important; border-radius: 16px !important; }
#disclaimer { font-size: 0.9rem; opacity: 0.85; }
#quality:not(:empty) { border-left: 4px solid #d97706; padding-left: 10px; }
/* Nothing wider than the screen: long words and URLs (cited sources) wrap, in answers and everywhere. */
.gradio-container .prose, .gradio-container .message, .gradio-container .md, #chatbot .message-content {
  overflow-wrap: anywhere; word-break: break-word; }
.gradio-container pre, .gradio-container code { white-space: pre-wrap; overflow-wrap: anywhere; }
.gradio-container img { max-width: 100%; }
/* The chat says once, above the conversation, who answers. */
#chat-model, #chat-context { font-size: 0.92rem; }
#chat-model p, #chat-context p { margin: 0; }
#chatbot .placeholder-content { padding: 0 18px; opacity: 0.85; }
/* Narrow side margins on a phone: 6 px at 360 px wide, Gradio's 32 px from 640 px. (Not in the @media
   block below: Gradio scopes the rules there to .contain, and the page's padding is outside it.) */
.gradio-container .main.app { padding-left: clamp(6px, calc(100vw - 608px), 32px) !important;
  padding-right: clamp(6px, calc(100vw - 608px), 32px) !important; }
@media (max-width: 640px) {
  #app-header { padding: 12px 14px; margin-bottom: 2px; border-radius: 14px; }
  #app-header h1 { font-size: 1.3rem; }
  #app-header p { font-size: 0.88rem; margin-top: 4px; }
  #app-header .badge { margin-top: 6px; font-size: 0.75rem; }
  /* All three tabs fit on a 360 px screen (Gradio hides the ones that do not behind a "..." menu). */
  .tab-wrapper button[role="tab"], .tab-wrapper .tab-container button { padding: 6px 9px !important; font-size: 0.95rem; }
  #photo { height: 260px !important; }
  #chatbot { height: min(460px, 52vh) !important; }
}
"""

# After an analysis, bring the result (overlay and severity) into view when it is not: on a phone it
# is below the photo and the examples. Waits for the overlay images, whose size moves the severity.
SCROLL_TO_RESULT_JS = """
async () => {
  const summary = document.querySelector('#summary');
  if (!summary || !summary.innerText.trim()) return;
  for (let i = 0; i < 40; i++) {
    const imgs = [...document.querySelectorAll('#overlay img')];
    if (imgs.length && imgs.every(img => img.complete)) break;
    await new Promise(r => setTimeout(r, 75));
  }
  const top = document.querySelector('#result-col') || document.querySelector('#overlay');
  const severity = document.querySelector('#severity');
  if (!top || !severity) return;
  const s = severity.getBoundingClientRect(), o = top.getBoundingClientRect();
  if (s.top >= 0 && s.bottom <= window.innerHeight && o.top >= 0) return;
  let y = window.scrollY + o.top - 8;
  const severityBottom = window.scrollY + s.bottom + 8;
  if (severityBottom - y > window.innerHeight) y = severityBottom - window.innerHeight;
  window.scrollTo({top: Math.max(0, y), behavior: 'smooth'});
}
"""

# On opening the chat tab, the message box is on the screen (with the conversation above it if it fits).
SCROLL_TO_CHAT_JS = """
async () => {
  let box = null;
  for (let i = 0; i < 40 && !box; i++) {
    box = document.querySelector('#chat-input');
    if (!box || !box.getBoundingClientRect().height) { box = null; await new Promise(r => setTimeout(r, 50)); }
  }
  if (!box) return;
  const b = box.getBoundingClientRect();
  if (b.top >= 0 && b.bottom <= window.innerHeight) return;
  const first = document.querySelector('#chat-model') || box;
  const top = window.scrollY + first.getBoundingClientRect().top - 8, bottom = window.scrollY + b.bottom + 8;
  window.scrollTo({top: bottom - top <= window.innerHeight ? top : bottom - window.innerHeight, behavior: 'instant'});
}
"""

# Gradio clears the chat box's placeholder while it answers and never puts it back: keep it.
KEEP_PLACEHOLDER_JS = """
() => {
  const keep = () => document.querySelectorAll('#chat-input textarea').forEach(t => {
    if (!t.dataset.placeholder && t.placeholder) t.dataset.placeholder = t.placeholder;
    if (t.dataset.placeholder && !t.placeholder) t.placeholder = t.dataset.placeholder;
  });
  new MutationObserver(keep).observe(document.body,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['placeholder']});
  keep();
}
"""

TODAY_JS = "() => new Date().toLocaleDateString('en-CA')"   # the visitor's date, YYYY-MM-DD

EXPORT_JS = """
(state) => {
  const data = (state && typeof state === 'object' && Array.isArray(state.entries))
    ? state : {format: 'acne-detection-ai/history', version: 1, entries: []};
  const blob = new Blob([JSON.stringify(data, null, 2)], {type: 'application/json'});
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = 'acne-history-' + new Date().toLocaleDateString('en-CA') + '.json';
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 30000);
  return [];
}
"""

# Reads the chosen file in the browser (nothing is uploaded to the server's disk) and hands its text
# to the server handler, which validates and merges it. A cancelled choice sends null.
IMPORT_JS = """
async (text, state) => {
  const input = document.createElement('input');
  input.type = 'file';
  input.accept = '.json,application/json';
  input.style.display = 'none';
  document.body.appendChild(input);
  const file = await new Promise((resolve) => {
    input.addEventListener('change', () => resolve(input.files[0] || null), {once: true});
    input.addEventListener('cancel', () => resolve(null), {once: true});
    input.click();
  });
  input.remove();
  if (!file) return [null, state];
  return [await file.slice(0, %d).text(), state];
}
""" % (history.MAX_IMPORT_CHARS + 1)


def page_css() -> str:
    """The CSS, with the background photo inlined (none when the file is missing or too large)."""
    # Inlined as a data URL: no file route to configure, and it works behind a Space's proxy path.
    if BACKGROUND.is_file() and BACKGROUND.stat().st_size < 200_000:
        data = base64.b64encode(BACKGROUND.read_bytes()).decode()
        return CSS.replace("__BACKGROUND__", f"data:image/jpeg;base64,{data}")
    return CSS.replace('url("__BACKGROUND__")', "")


def theme() -> gr.themes.Base:
    """Gradio's Soft theme in the app's colours."""
    return gr.themes.Soft(primary_hue="teal", secondary_hue="rose", neutral_hue="slate")
