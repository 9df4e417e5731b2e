// Autosave: the session (every run's setup, colour, history and checkpoint, the selection, pasted text and the
// link it belongs to) goes to IndexedDB when training stops and every 15 s while it runs, and comes back after a
// reload. The store holds one session. Storage that is unavailable (blocked, a private mode without IndexedDB) or
// full is said once in a notice; training goes on, and a full store keeps its last session (a failed write
// changes nothing).
import { on, emit } from './bus.js';
import * as runs from './runs.js';
import { getCustomText } from './data.js';
import { currentHash } from './state.js';

const DB = 'transformer-playground';
const STORE = 'session';
const KEY = 'last';
const VERSION = 1;
const EVERY_MS = 15000;

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => {
      // Another tab (or a newer page) wanting a new version: let it.
      req.result.onversionchange = () => req.result.close();
      resolve(req.result);
    };
    req.onerror = () => reject(req.error);
  });
}

async function tx(mode, fn) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const req = fn(t.objectStore(STORE));
      t.oncomplete = () => resolve(req?.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  } finally {
    db.close();
  }
}

let problem = null; // the storage failure last said: 'off' | 'full' | null

/** Says once what is wrong with storage, and again when it changes or works again. */
function storageState(e) {
  const now = e ? (e.name === 'QuotaExceededError' ? 'full' : 'off') : null;
  if (now === problem) return;
  if (now) emit('notice', { key: now === 'full' ? 'notice.storageFull' : 'notice.storageOff', vars: { msg: e.message || e.name }, kind: 'warn' });
  else emit('notice', { key: 'notice.storageBack', vars: {} });
  problem = now;
}

/** The last session, or null (also when storage does not answer within 3 s: the page must not wait on it). */
export async function load() {
  const timeout = new Promise((resolve) => {
    setTimeout(() => resolve(null), 3000);
  });
  try {
    const s = await Promise.race([tx('readonly', (st) => st.get(KEY)), timeout]);
    return s && s.version === VERSION ? s : null;
  } catch (e) {
    storageState(e);
    return null;
  }
}

let enabled = false;
let saving = null;
let again = false;
let timer = null;
let lastSave = 0;

/** Saves now (one save at a time; a request during a save runs once after it). */
export async function saveNow() {
  if (!enabled) return;
  if (saving) {
    again = true;
    return saving;
  }
  saving = (async () => {
    try {
      const snap = await runs.snapshot();
      const session = { version: VERSION, savedAt: Date.now(), hash: currentHash(), customText: getCustomText(), ...snap };
      await tx('readwrite', (st) => st.put(session, KEY));
      lastSave = performance.now();
      document.documentElement.dataset.autosaved = String(session.savedAt);
      storageState(null);
    } catch (e) {
      console.warn('autosave failed:', e);
      // Tried again at the next change or interval, not at once.
      lastSave = performance.now();
      storageState(e);
    } finally {
      saving = null;
    }
    if (again) {
      again = false;
      await saveNow();
    }
  })();
  return saving;
}

function soon(ms = 500) {
  clearTimeout(timer);
  timer = setTimeout(saveNow, ms);
}

/** Starts saving on changes: at once when training stops or runs change, at most every 15 s while it goes on. */
export function enable() {
  enabled = true;
  on('stopped', () => soon(200));
  on('runs', () => soon(1000));
  on('built', () => soon(1000));
  on('progress', () => {
    if (performance.now() - lastSave > EVERY_MS) soon(0);
  });
}
