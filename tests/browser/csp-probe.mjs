// Loaded into the playground by faults-hostile.test.mjs as a script of the page's own origin (which its CSP lets
// run), so that what it tries is held to the page's CSP — unlike code a test evaluates through the DevTools
// protocol, which the browser runs past the CSP.
const attempt = (f) => {
  try {
    f();
    return 'ran';
  } catch (e) {
    return e.name;
  }
};
const out = [attempt(() => (0, eval)('1')), attempt(() => new Function('return 1')())]; // eslint-disable-line no-eval
setTimeout('window.__cspRan = 1'); // a string is code: the CSP does not run it
setTimeout(() => {
  window.__cspProbe = [...out, window.__cspRan ?? 'not run'];
}, 50);
