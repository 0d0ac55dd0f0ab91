import type { SiteNode } from '../sites.js';

/** The site hierarchy as a nested list of toggle buttons (keyboard and screen-reader friendly). */
export function SiteTree({
  roots,
  selected,
  onSelect,
}: {
  roots: SiteNode[];
  selected: string | null;
  onSelect: (id: string | null) => void;
}) {
  const item = (n: SiteNode) => (
    <li key={n.id}>
      <button
        type="button"
        class="link"
        aria-pressed={selected === n.id}
        data-testid="site"
        onClick={() => onSelect(selected === n.id ? null : n.id)}
      >
        {n.name}
      </button>{' '}
      <span class="muted">({n.deviceCount})</span>
      {n.children.length > 0 && <ul>{n.children.map(item)}</ul>}
    </li>
  );
  return (
    <nav aria-label="Sites" data-testid="site-tree">
      <ul>
        <li>
          <button type="button" class="link" aria-pressed={selected === null} onClick={() => onSelect(null)}>
            All sites
          </button>
        </li>
        {roots.map(item)}
      </ul>
    </nav>
  );
}
