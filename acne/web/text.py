"""The web app's words: the result, the chat's context, the About tab and My progress, as Markdown or
HTML built from plain data (a Report, Analyzer.describe(), history records). No component, no I/O."""
from __future__ import annotations

import html
from typing import Any

from acne import history, views
from acne.report import Report
from acne.severity import band_text, recommendations

REGION_WORDS = {"face": "the face found in the photo", "skin": "the patch of skin found in the photo",
                "whole": "the whole photo (a close-up)"}

HEADER_HTML = """
<div id="app-header">
  <h1>Acne Detection AI</h1>
  <p>Upload a close, well-lit photo of the skin: the app marks acne lesions, estimates the severity
  and suggests what to do next. Then ask the skincare assistant.</p>
  <span class="badge">Educational tool · not a medical diagnosis</span>
</div>
"""

CHAT_PLACEHOLDER = ("**Ask about your result, a product or your routine.** For example: *What does my result "
                    "mean?* · *Can I use benzoyl peroxide and adapalene together?* · *How long until I see "
                    "results?*")

PROGRESS_INTRO = """\
### Follow your acne over time
Treatments take 8–12 weeks to show. After each analysis, press **Save to my history** (in the
**Analyze** tab, also for a whole-face result): the result is kept **only in this browser**, never on
our server. Here you see the trend, compare two dates side by side, and download or delete your history.
For fair comparisons, take similar photos: same light, same distance, same side of the face."""

VIEWS_INTRO = """\
Add a photo of the **left side**, the **front** and the **right side** of one face (one or two are
fine too), then press **Analyse the whole face**. Each photo is analysed on its own; the **most
affected view decides the whole-face grade**, as dermatologists' global grading does. Photos are
deleted from the server as soon as they are analysed."""

SEVERITY_COLOURS = {"Clear": "#15803d", "Mild": "#a16207", "Moderate": "#c2410c", "Severe": "#b91c1c"}


def _pct(p: float) -> str:
    return f"{p:.0%}"


# --------------------------------------------------------------------------- Analyze and chat

def summary_markdown(report: Report, grader_name: str | None = None) -> str:
    """The result in a few lines.

    Args:
        report: the analysis's Report.
        grader_name: the grader's name as the page shows it (Analyzer.describe()'s short_name);
            None: the name in the report.
    Returns:
        Markdown.
    """
    if not report.assessed:
        return ("### Not assessed\nNo face or skin was found in this photo, so **no acne grade is given**. "
                "Please add a well-lit colour photo of the face, or of the affected skin.")
    region = (report.region or {}).get("found_by", "whole")
    lines = [
        f"### {report.severity} acne (confidence {_pct(report.confidence)})",
        f"- **Grader's own level:** `level {report.grader.level}` (model: `{grader_name or report.grader.model}`)",
        f"- **Lesions found:** {report.lesion_count} → count-based grade **{report.count_grade}** "
        f"({band_text(report.count_grade)})",
        f"- **Analysed:** {REGION_WORDS.get(region, region)}"
        + (" (outlined in blue)" if region in ("face", "skin") else ""),
    ]
    if report.assessment == "unreliable":
        lines.insert(0, "**⚠️ Unreliable:** this photo does not let the grade be trusted as it stands (the "
                        "warning below says why). Retake it as the warning says before trusting this grade.\n")
    if not report.grades_agree:
        lines.append(
            f"\n**Note:** the estimates disagree. The grader says **{report.severity}**, the lesion count alone "
            f"suggests **{report.count_grade}**. Treat the result as uncertain: lighting, angle and how much of "
            "the face is in the photo affect both.")
    return "\n".join(lines)


def quality_markdown(report: Report) -> str:
    """The photo-quality warnings ("" when there are none)."""
    if not report.quality_warnings:
        return ""
    items = "\n".join(f"- {html.escape(w)}" for w in report.quality_warnings)
    if not report.assessed:
        return f"**⚠️ No grade for this photo.**\n{items}"
    return f"**⚠️ Photo quality:** the result may be less reliable.\n{items}"


def recommendations_markdown(report: Report) -> str:
    """What the visitor can do for this severity ("" when not assessed)."""
    if not report.recommendations:
        return ""
    items = "\n".join(f"- {r}" for r in report.recommendations)
    return f"### What you can do ({report.severity})\n{items}"


def chat_context_markdown(report: Report | None) -> str:
    """What the chat knows of the latest analysis (report None: none yet)."""
    if report is None:
        return ("No photo analysed yet: the assistant answers general skincare questions. Analyse a photo in "
                "the **Analyze** tab and it will know your result.")
    if not report.assessed:
        return ("Your latest photo could not be assessed (no face or skin found), so the assistant answers "
                "general skincare questions. Try a closer, well-lit photo of the skin in the **Analyze** tab.")
    return (f"The assistant knows your latest analysis: **{report.severity}** "
            f"(confidence {_pct(report.confidence)}), {report.lesion_count} lesions found "
            f"(count-based grade {report.count_grade}).")


def duration_text(seconds: float) -> str:
    """"90 seconds", "15 minutes": a time to live in words."""
    minutes = round(seconds / 60)
    if minutes >= 2:
        return f"{minutes} minutes"
    return f"{int(seconds)} seconds"


def about_markdown(models: dict, chat_name: str, cache_ttl: float) -> str:
    """The About tab.

    Args:
        models: Analyzer.describe() (names, input sizes and shipped figures of the two models, backend).
        chat_name: who answers in the chat (Assistant.name).
        cache_ttl: seconds a result may stay on the server at most (Settings.cache_ttl).
    Returns:
        Markdown.
    """
    segmenter, grader = models["segmenter"], models["grader"]
    seg_size = segmenter.get("input_size")
    return f"""
## Models in use

**Lesion segmenter:** `{segmenter["short_name"]}` — a U-Net with a ResNet34 encoder
(segmentation-models-pytorch) that marks lesion pixels; connected regions are counted as lesions.
{f"It sees the photo at {seg_size} px on the long side." if seg_size else ""}

{segmenter["figures_markdown"]}

**Severity grader:** `{grader["short_name"]}` — an image classifier whose levels map onto
Clear / Mild / Moderate / Severe.

{grader["figures_markdown"]}

**Runtime:** `{models["backend"]}` on this server's CPU, the two models
{"at the same time" if models["parallel"] else "one after the other"}.

**Skincare chat:** {html.escape(chat_name)}.

## Data

Example photos and our own weights come from **ACNE04** (Wu et al., *Joint Acne Image Grading and
Counting via Label Distribution Learning*, ICCV 2019; free for academic use) with lesion boxes from
the Roboflow export *Acne04 Detection v5* (CC BY 4.0). Weights trained on it inherit these terms:
research and educational use, with attribution. Lesion masks were derived from boxes (ellipses),
so mask figures measure agreement with ellipses, not with traced lesion outlines.

## Limits

- Not a medical device and not a diagnosis. It cannot tell acne from rosacea, eczema, infections or
  other conditions that look similar.
- Trained and checked on one data set of close clinical photos (ACNE04: mostly half-face views of
  East Asian patients). Other angles, lighting, make-up, filters, skin tones and full-face selfies
  are less reliable.
- The lesion count is only as good as the segmenter; touching lesions may be counted as one.
- The chat assistant can be wrong; it does not see your photo, only the numbers above.

## Privacy

Photos are analysed in memory. Uploaded files and the images made from them are deleted when you
analyse the next photo or close the page, and after {duration_text(cache_ttl)} at the latest.
Nothing is logged about your photo, and the optional profile in the chat is used for that answer only.
"""


# --------------------------------------------------------------------------- My progress and Whole face

def _escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def ok(text: str) -> str:
    """A status line for something done."""
    return f"✓ {text}"


def warn(text: str) -> str:
    """A status line for something refused."""
    return f"⚠️ {text}"


def _badge(grade: str | None) -> str:
    if grade is None:
        return "<span>not assessed</span>"
    colour = SEVERITY_COLOURS.get(grade, "#334155")
    return (f"<span style='display:inline-block;padding:1px 8px;border-radius:999px;background:{colour};"
            f"color:#fff;font-size:0.85em;font-weight:600'>{_escape(grade)}</span>")


def entry_card_html(entry: dict, title: str | None = None, flex: str = "none") -> str:
    """One saved result as a small card (thumbnail when kept, date, grade, count, note)."""
    picture = ""
    if entry.get("thumbnail"):
        picture = (f"<img src='{_escape(entry['thumbnail'])}' alt='lesion overlay of {_escape(entry['date'])}' "
                   "style='width:96px;height:96px;object-fit:cover;border-radius:10px;flex:none'>")
    kind = ""
    if entry["kind"] == "face":
        per_view = ", ".join(f"{views.view_title(v)} {n}" for v, n in entry.get("view_counts", {}).items())
        kind = f"<div style='font-size:0.85em;opacity:0.8'>Whole face: {_escape(per_view)}</div>"
    note = (f"<div style='font-style:italic;overflow-wrap:anywhere'>“{_escape(entry['note'])}”</div>"
            if entry.get("note") else "")
    heading = f"<div style='font-size:0.8em;text-transform:uppercase;opacity:0.7'>{_escape(title)}</div>" if title else ""
    count_grade = (f" · count-based grade {_escape(entry['count_grade'])}" if entry.get("count_grade") else "")
    return (
        "<div class='history-entry' style='display:flex;gap:10px;align-items:flex-start;padding:8px 10px;"
        "border:1px solid rgba(100,116,139,0.3);border-radius:12px;background:rgba(255,255,255,0.6);"
        f"flex:{flex};min-width:0' data-entry-id='{_escape(entry['id'])}'>{picture}<div style='min-width:0'>"
        f"{heading}<div><b>{_escape(entry['date'])}</b> {_badge(entry['severity'])}</div>"
        f"<div><b>{entry['lesion_count']}</b> lesion{'s' if entry['lesion_count'] != 1 else ''}{count_grade}</div>"
        f"{kind}{note}</div></div>")


def history_list_html(entries: list[dict]) -> str:
    """The saved results (history records, oldest first) as cards, newest first. Returns HTML."""
    if not entries:
        return ("<div id='history-empty' style='padding:10px;opacity:0.85'>Your history is empty. Analyse a photo "
                "in the <b>Analyze</b> tab, then press <b>Save to my history</b>.</div>")
    cards = "".join(entry_card_html(e) for e in reversed(entries))   # newest first
    n = len(entries)
    return (f"<div style='margin-bottom:6px'><b>{n}</b> saved result{'s' if n != 1 else ''}, newest first</div>"
            f"<div style='display:flex;flex-direction:column;gap:8px'>{cards}</div>")


def compare_html(before: dict | None, after: dict | None) -> str:
    """Two history records side by side with what changed (a hint when one is missing). Returns HTML."""
    if before is None or after is None:
        return "<div style='opacity:0.85'>Save two results to compare them here.</div>"
    if before["id"] == after["id"]:
        return "<div style='opacity:0.85'>Choose two different entries to compare.</div>"
    result = history.compare(before, after)
    lines = "".join(f"<li>{_escape(line)}</li>" for line in result["lines"])
    notes = "".join(f"<p style='margin:4px 0'>⚠️ {_escape(note)}</p>" for note in result["notes"])
    return (
        "<div style='display:flex;flex-wrap:wrap;gap:10px'>"
        f"{entry_card_html(result['before'], 'Before', '1 1 220px')}"
        f"{entry_card_html(result['after'], 'After', '1 1 220px')}</div>"
        f"<div id='compare-words' style='margin-top:8px'><b>What changed</b><ul style='margin:4px 0 4px 18px'>"
        f"{lines}</ul>{notes}</div>")


def trend_markdown(state: Any) -> str:
    """The trend of the stored history (gr.BrowserState value) in a sentence, with its caveats."""
    found = history.trend(state)
    entries = history.entries_by_date(state)
    if found is None:
        if not entries:
            return ""
        kind = "whole-face result" if entries[-1]["kind"] == "face" else "result"
        return (f"Only one date with a {kind} so far. Save another one on a later day (the date is editable) "
                "and the trend appears here.")
    sentence = found["sentence"]
    text = f"**Trend:** {sentence[0].upper()}{sentence[1:]}."
    for note in found["notes"]:
        text += f"\n\n⚠️ {note}"
    return text


def chat_note_markdown(sentence: str | None) -> str:
    """The chat tab's line about the trend it knows ("" when there is none)."""
    if not sentence:
        return ""
    return f"It also knows the trend in your saved history (**My progress**): {sentence}."


def views_markdown(summary: dict) -> str:
    """The whole-face summary (acne.views.summarize) as a table and advice. Returns Markdown."""
    severity = summary.get("severity")
    lines: list[str] = []
    if severity is None:
        lines.append("### No whole-face grade")
    else:
        lines += [f"### Whole face: {severity}",
                  f"Decided by the **{views.view_title(summary['decided_by'])}**, the most affected view "
                  "(the whole-face grade follows the worst area, as clinical global grading does)."]
    rows = []
    for item in summary["views"]:
        report = item["report"]
        grade = report.get("severity") or "not assessed"
        count = report.get("lesion_count", len(report.get("lesions") or []))
        rows.append(f"| {views.view_title(item['view']).capitalize()} | {grade} | {count} | "
                    f"{report.get('count_grade') or '–'} |")
    for item in summary["failed"]:
        rows.append(f"| {views.view_title(item['view']).capitalize()} | could not be analysed | – | – |")
    if rows:
        lines += ["", "| View | Severity | Lesions | Count-based grade |", "|---|---|---|---|", *rows]
        if len(summary["lesion_counts"]) > 1:
            lines.append(f"| **All views** | **{severity or '–'}** | **{summary['total_lesions']}** | "
                         f"{summary.get('count_grade') or '–'} (worst view) |")
    if summary.get("message"):
        lines += ["", f"**Note:** {html.escape(summary['message'])}"]
    lines += ["", "_Hayashi's count bands are for one half-face view: the count-based grade is the worst view's "
              "band, not a band of the total._"]
    if severity is not None:
        advice = "\n".join(f"- {r}" for r in recommendations(severity))
        lines += ["", f"### What you can do ({severity})", advice]
    return "\n".join(lines)
