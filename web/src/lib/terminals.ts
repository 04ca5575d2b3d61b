// Which terminal tabs a capsule has, kept in localStorage so a page reload
// reconnects to the same shells by tag.

export interface SavedTab {
  key: string;
  tag: string | null;
}

const storageKey = (capsuleId: string) => `warren.terminals.${capsuleId}`;

export function newKey(): string {
  return Math.random().toString(36).slice(2, 10);
}

export function loadTabs(capsuleId: string): SavedTab[] {
  try {
    const raw = JSON.parse(localStorage.getItem(storageKey(capsuleId)) ?? '[]');
    if (Array.isArray(raw)) {
      return raw
        .filter((t) => t && typeof t.tag === 'string')
        .map((t) => ({ key: newKey(), tag: t.tag as string }));
    }
  } catch {
    // unreadable: start afresh
  }
  return [];
}

/** Saves the tabs whose shell has a tag (the others have nothing to reconnect to). */
export function saveTabs(capsuleId: string, tabs: SavedTab[]): void {
  const tagged = tabs.filter((t) => t.tag).map((t) => ({ tag: t.tag }));
  if (tagged.length) localStorage.setItem(storageKey(capsuleId), JSON.stringify(tagged));
  else localStorage.removeItem(storageKey(capsuleId));
}
