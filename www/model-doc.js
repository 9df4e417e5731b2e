// docs/MODEL.md's sections, for the step-through's formula of each stage: the file is fetched once (the service
// worker keeps it, so this works offline) and a stage's link `MODEL.md#<anchor>` is resolved to the heading whose
// GitHub anchor that is, and the text under it up to the next heading. The text is shown as it is written (plain
// markdown, set with textContent). This module touches no DOM.

export const MODEL_MD = 'docs/MODEL.md';

let doc = null; // Promise<string>: the file's text, fetched on first use

/** GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'. */
export function anchorOf(heading) {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

/**
 * The section of markdown `md` under the heading whose anchor is `anchor`: `{ heading, level, body }`, the body
 * running to the next heading of any level (a subsection is another formula), or null when no heading has it.
 */
export function sectionOf(md, anchor) {
  const lines = md.split('\n');
  let fence = false;
  let found = null;
  const body = [];
  for (const line of lines) {
    if (/^(```|~~~)/.test(line)) fence = !fence;
    const m = fence ? null : /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (found) {
      if (m) break;
      body.push(line);
    } else if (m && anchorOf(m[2]) === anchor) {
      found = { heading: m[2], level: m[1].length };
    }
  }
  return found && { ...found, body: body.join('\n').trim() };
}

/** The section that `link` ('MODEL.md#attention') names, fetched on first use; rejects when it cannot be read. */
export async function modelSection(link) {
  const anchor = link.split('#')[1] ?? '';
  doc ??= fetch(MODEL_MD).then((r) => (r.ok ? r.text() : Promise.reject(new Error(`${MODEL_MD}: HTTP ${r.status}`))));
  let md;
  try {
    md = await doc;
  } catch (e) {
    doc = null; // try again next time (offline before the first visit kept it)
    throw e;
  }
  const s = sectionOf(md, anchor);
  if (!s) throw new Error(`${MODEL_MD} has no section #${anchor}`);
  return s;
}
