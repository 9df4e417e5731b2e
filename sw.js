// The playground's service worker: pkg/sw.js (the package's), which gives the page cross-origin isolation on a host
// that sends no COOP/COEP (so the threaded build runs there) and, with the files below kept on install, makes the
// page work offline after the first visit. Cached responses are served with COOP/COEP too.
// The page registers it unless its URL has ?nosw (www/main.js, through pkg/isolate.js).
const WWW = [
  'main.js', 'bus.js', 'dom.js', 'i18n.js', 'state.js', 'options.js', 'presets.js', 'runs.js', 'engine.js', 'data.js',
  'autosave.js', 'format.js', 'concepts.js', 'export.js', 'style.css', 'strings/en.js', 'strings/zh.js', 'embed.html',
  'panels/config.js', 'panels/data.js', 'panels/summary.js', 'panels/controls.js', 'panels/runs.js', 'panels/charts.js',
  'panels/attention.js', 'panels/heatmap.js', 'panels/positions.js', 'panels/shapes.js', 'panels/use.js', 'panels/checkpoint.js', 'panels/notices.js',
  'panels/experts.js', 'panels/kv.js', 'panels/cost.js', 'panels/step.js', 'panels/concepts.js', 'lessons.js',
  'panels/lessons.js', 'lessons/index.json', 'model-doc.js', 'recipes.js', 'strings/recipes.js', 'panels/recipes.js', 'panels/icl-attention.js',
  'vendor/uplot/uPlot.esm.js', 'vendor/uplot/uPlot.min.css', 'data/tinyshakespeare.txt', 'data/pretrained-gpt-tiny.safetensors',
].map((f) => `www/${f}`);
const ENGINE = ['index.js', 'worker.js', 'protocol.js', 'presets.js', 'lessons.js', 'lessons-data.js', 'strings.js', 'element.js', 'chart.js', 'isolate.js',
  'data/tinyshakespeare.txt', 'data/pretrained-gpt-tiny.safetensors', ...['threads', 'single', 'baseline'].flatMap((b) => [`wasm/${b}/tp.js`, `wasm/${b}/tp_bg.wasm`]),
].map((f) => `pkg/${f}`);

/** The lessons' index names every lesson file (www/lessons/<id>.json): they are kept too, with no second list here. */
async function more(url, res) {
  if (url !== 'www/lessons/index.json') return [];
  const { lessons } = await res.json();
  return lessons.map((id) => `www/lessons/${id}.json`);
}

// docs/MODEL.md: the step-through's formulas (www/model-doc.js) are read from it.
self.tpServiceWorker = { cache: 'transformer-playground-v1', shell: ['./', 'index.html', 'docs/MODEL.md', ...WWW, ...ENGINE], more };
importScripts('pkg/sw.js');
