// Keyboard shortcuts: one table drives both the key handler and the help panel.

import type { Editor } from './state/editor';

export interface Shortcut {
  keys: string;
  what: string;
}

export const SHORTCUTS: Shortcut[] = [
  { keys: 'Ctrl+Enter', what: 'Run the workflow' },
  { keys: 'Ctrl+Z / Ctrl+Shift+Z, Ctrl+Y', what: 'Undo / redo' },
  { keys: 'Ctrl+C / Ctrl+X / Ctrl+V', what: 'Copy / cut / paste (also between browser tabs)' },
  { keys: 'Ctrl+D', what: 'Duplicate the selection' },
  { keys: 'Delete, Backspace', what: 'Delete the selection' },
  { keys: 'Ctrl+A', what: 'Select everything' },
  { keys: 'Shift+drag, Ctrl+click', what: 'Select several nodes' },
  { keys: 'Ctrl+B', what: 'Bypass the selected nodes (their input passes through)' },
  { keys: 'Alt+C', what: 'Collapse / expand the selected nodes' },
  { keys: 'Ctrl+G', what: 'Put a group around the selection' },
  { keys: 'Ctrl+S / Ctrl+Shift+S', what: 'Save / save as, in the workflow library' },
  { keys: 'Ctrl+O', what: 'Open from the library' },
  { keys: '. or F', what: 'Fit the view to the graph' },
  { keys: 'R', what: 'Refresh the node list and model lists from the server' },
  { keys: 'Right-click', what: 'Menu of the node or the canvas' },
  { keys: 'Double-click canvas', what: 'Search and add a node' },
  { keys: 'Drag a link to empty space', what: 'Add a node that fits that socket' },
  { keys: 'Drag a link off an input', what: 'Disconnect it' },
  { keys: 'Double-click a title', what: 'Rename the node or group' },
  { keys: 'Click a node that ran', what: 'See its cached outputs' },
  { keys: 'Esc', what: 'Close a dialog, or leave a loop body' },
  { keys: '?', what: 'This help' },
];

function editable(t: EventTarget | null): boolean {
  const el = t as HTMLElement | null;
  if (!el) return false;
  return el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName);
}

/** Returns true when the key was handled. */
export function handleKey(ed: Editor, e: KeyboardEvent, sizes: () => Record<string, [number, number]>): boolean {
  const mod = e.ctrlKey || e.metaKey;
  const k = e.key.toLowerCase();
  if (mod && k === 'enter') {
    void ed.run();
    return true;
  }
  if (mod && k === 's') {
    if (e.shiftKey) ed.openDialog({ kind: 'saveAs' });
    else void ed.save();
    return true;
  }
  if (mod && k === 'o') {
    ed.openDialog({ kind: 'library' });
    return true;
  }
  if (k === 'escape') {
    if (ed.s.dialog) ed.openDialog(null);
    else if (ed.s.hint) ed.showHint(null);
    else if (ed.s.path.length) ed.leaveBody();
    else return false;
    return true;
  }
  if (editable(e.target) || ed.s.dialog) return false;
  if (mod && k === 'z') {
    if (e.shiftKey) ed.doRedo();
    else ed.doUndo();
    return true;
  }
  if (mod && k === 'y') {
    ed.doRedo();
    return true;
  }
  if (mod && k === 'c') return ed.copy();
  if (mod && k === 'x') {
    ed.cut();
    return true;
  }
  if (mod && k === 'd') {
    ed.duplicate();
    return true;
  }
  if (mod && k === 'a') {
    ed.selectAll();
    return true;
  }
  if (mod && k === 'b') {
    ed.toggleBypass();
    return true;
  }
  if (mod && k === 'g') {
    ed.groupSelection(sizes());
    return true;
  }
  if (e.altKey && k === 'c') {
    ed.toggleCollapse();
    return true;
  }
  if (!mod && !e.altKey && (k === 'delete' || k === 'backspace')) {
    ed.deleteSelection();
    return true;
  }
  if (!mod && !e.altKey && (k === '.' || k === 'f')) {
    ed.fitView();
    return true;
  }
  if (!mod && !e.altKey && k === 'r') {
    void ed.loadCatalog().then(() => ed.toast('info', 'Node list and models refreshed'));
    return true;
  }
  if (e.key === '?') {
    ed.openDialog({ kind: 'help' });
    return true;
  }
  return false;
}
