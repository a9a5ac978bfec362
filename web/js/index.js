// Landing page: links to the three role pages and the language toggle.
// Elements: #lang-toggle, a#go-referrer, a#go-specialist, a#go-supervisor.
// Hook: await window.jisr.state() -> {page: 'index', lang, ...}.

import './auth.js';
import { setupChrome } from './app.js';
import { setHookBase } from './hook.js';

setupChrome()
  .then(() => setHookBase({ page: 'index', ready: true }))
  .catch((err) => console.error('landing page failed to start', err && err.message));
