// The organisations' sign-in page: where a sign-in that went wrong lands (the
// provider unreachable, the sign-in refused or expired), and where signing out ends.
// Elements: #signin-problem (why, from ?error=&organisation=), #signin-organisations
// (a.signin-org[data-organisation] per organisation, to its provider's sign-in).
// Hook: await window.jisr.state() -> {page: 'signin', problem, organisations}.

import './auth.js';
import { setupChrome } from './app.js';
import { api } from './api.js';
import { setText } from './i18n.js';
import { setHookBase, registerHookSource } from './hook.js';

const PROBLEMS = new Set(['provider_unreachable', 'signin_refused', 'signin_expired', 'signin_not_started']);
let names = [];

function showProblem(query) {
  const problem = query.get('error');
  const el = document.getElementById('signin-problem');
  if (!PROBLEMS.has(problem)) return null;
  const org = names.find((o) => o.organisation === query.get('organisation'));
  setText(el, `signinPage.problem.${problem}`, { name: org ? org.name : query.get('organisation') || '' });
  el.hidden = false;
  return problem;
}

async function listOrganisations() {
  try {
    names = (await api.organisations()).organisations || [];
  } catch (err) {
    names = [];
  }
  const box = document.getElementById('signin-organisations');
  for (const org of names) {
    const link = document.createElement('a');
    link.className = 'btn btn-primary signin-org';
    link.dataset.organisation = org.organisation;
    link.href = `/auth/login?organisation=${encodeURIComponent(org.organisation)}&next=/index.html`;
    setText(link, 'signin.withOrganisation', { name: org.name });
    box.append(link);
  }
}

async function start() {
  await setupChrome();
  await listOrganisations();
  const problem = showProblem(new URLSearchParams(window.location.search));
  registerHookSource('signin', () => ({ problem, organisations: names.map((o) => o.organisation) }));
  setHookBase({ page: 'signin', ready: true });
}

start().catch((err) => console.error('sign-in page failed to start', err && err.message));
