// Right-click menus: on a node (rename, collapse, bypass, duplicate, delete, loop body, outputs) and
// on the canvas (add a node, paste, group, fit).

import { useEffect } from 'react';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';

export interface MenuState {
  x: number;
  y: number;
  flow: [number, number];
  nodeId: string | null;
}

interface Item {
  label: string;
  keys?: string;
  run: () => void;
  disabled?: boolean;
}

export function ContextMenu({ menu, close, sizes }: { menu: MenuState; close: () => void; sizes: () => Record<string, [number, number]> }) {
  const catalog = useEd((s) => s.catalog);
  const path = useEd((s) => s.path);
  const runNodes = useEd((s) => s.run.nodes);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === 'Escape' && close();
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [close]);
  const items: Item[] = [];
  const n = menu.nodeId ? editor.graph.nodes[menu.nodeId] : null;
  if (n) {
    const isLoop = !!catalog.resolve(n.type)?.loop;
    const full = (path.length ? path.join('/') + '/' : '') + n.id;
    const ran = runNodes[full] && ['executed', 'cached'].includes(runNodes[full].status);
    items.push(
      { label: 'Rename', keys: 'double-click title', run: () => {
        const v = window.prompt('Node title', n.title ?? catalog.resolve(n.type)?.display_name ?? n.type);
        if (v !== null) editor.patchNode(n.id, { title: v.trim() || undefined }, 'Rename');
      } },
      { label: n.collapsed ? 'Expand' : 'Collapse', keys: 'Alt+C', run: () => editor.toggleCollapse([n.id]) },
      { label: n.bypass ? 'Stop bypassing' : 'Bypass', keys: 'Ctrl+B', run: () => editor.toggleBypass() },
      { label: 'Duplicate', keys: 'Ctrl+D', run: () => editor.duplicate() },
      { label: 'Copy', keys: 'Ctrl+C', run: () => editor.copy() },
      { label: 'Group selection', keys: 'Ctrl+G', run: () => editor.groupSelection(sizes()) },
    );
    if (isLoop) items.push({ label: 'Open loop body', run: () => editor.openBody(n.id) });
    items.push({ label: 'Show cached outputs', run: () => editor.inspectNode(full), disabled: !ran });
    items.push({ label: 'Delete', keys: 'Del', run: () => editor.deleteSelection() });
  } else {
    items.push(
      { label: 'Add node…', keys: 'double-click', run: () => editor.openDialog({ kind: 'search', screen: [menu.x, menu.y], flow: menu.flow }) },
      { label: 'Paste', keys: 'Ctrl+V', run: () => { editor.pointer = menu.flow; editor.paste(); } },
      { label: 'Select all', keys: 'Ctrl+A', run: () => editor.selectAll() },
      { label: 'Fit view', keys: '.', run: () => editor.fitView() },
      { label: 'Refresh node list and models', keys: 'R', run: () => void editor.loadCatalog() },
    );
    if (path.length) items.push({ label: 'Return from the loop body', keys: 'Esc', run: () => editor.leaveBody() });
  }
  const left = Math.min(menu.x, window.innerWidth - 250);
  const top = Math.min(menu.y, window.innerHeight - items.length * 30 - 16);
  return (
    <div className="ll-overlay ll-overlay-clear" onMouseDown={close} onContextMenu={(e) => { e.preventDefault(); close(); }}>
      <ul className="ll-menu" role="menu" style={{ left, top }} onMouseDown={(e) => e.stopPropagation()}>
        {items.map((it) => (
          <li key={it.label}>
            <button
              type="button"
              role="menuitem"
              disabled={it.disabled}
              onClick={() => {
                close();
                it.run();
              }}
            >
              <span>{it.label}</span>
              {it.keys ? <kbd>{it.keys}</kbd> : null}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
