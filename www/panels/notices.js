// Messages for the user (a run forked, an engine restart, a restored session): shown at the top, read out by
// screen readers, dismissed by a button or after a while.
import { $, h } from '../dom.js';
import { t } from '../i18n.js';
import { on } from '../bus.js';

function show({ key, vars, kind = 'info' }) {
  const list = $('#notices');
  const close = h('button', { type: 'button', class: 'close', attrs: { 'aria-label': t('notice.close') } }, '×');
  const item = h('div', { class: `notice ${kind}`, dataset: { key } }, h('span', {}, t(key, vars)), close);
  close.addEventListener('click', () => item.remove());
  list.append(item);
  while (list.children.length > 3) list.firstChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 20000 : 9000);
}

export function mount() {
  on('notice', show);
}
