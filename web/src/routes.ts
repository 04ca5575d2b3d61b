// The console's pages. Each loads on first visit (its own chunk), so the
// first load carries only the shell and the page it opens on.

import type { Component } from 'svelte';

export interface Route {
  path: string;
  title: string;
  load: () => Promise<{ default: Component<any> }>;
}

export const routes: Route[] = [
  { path: '/capsules', title: 'Capsules', load: () => import('./pages/Capsules.svelte') },
  { path: '/capsules/:id/:tab?', title: 'Capsule', load: () => import('./pages/CapsuleDetail.svelte') },
  { path: '/admin/templates', title: 'Templates', load: () => import('./pages/admin/Templates.svelte') },
  { path: '/admin/builds', title: 'Builds', load: () => import('./pages/admin/Builds.svelte') },
  { path: '/admin/builds/new', title: 'New build', load: () => import('./pages/admin/BuildNew.svelte') },
  { path: '/admin/builds/:id', title: 'Build', load: () => import('./pages/admin/BuildDetail.svelte') },
  { path: '/keys', title: 'API keys', load: () => import('./pages/ApiKeys.svelte') },
  { path: '/team', title: 'Team', load: () => import('./pages/Members.svelte') },
  { path: '/hosts', title: 'Hosts', load: () => import('./pages/Hosts.svelte') },
  { path: '/audit', title: 'Audit log', load: () => import('./pages/Audit.svelte') },
];

/** Where a user lands: administrators on templates, everyone else on capsules. */
export function home(isAdmin: boolean): string {
  return isAdmin ? '/admin/templates' : '/capsules';
}
