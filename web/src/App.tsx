// The editor's layout: toolbar, palette, canvas, side panel, dialogs, banners and toasts.

import { ReactFlowProvider, useReactFlow } from '@xyflow/react';
import { useEffect } from 'react';
import { Canvas } from './components/Canvas';
import { Dialogs, Toasts } from './components/Dialogs';
import { Palette } from './components/Palette';
import { SidePanel } from './components/Panels';
import { Breadcrumb, RunStatus, Toolbar } from './components/Toolbar';
import { handleKey } from './shortcuts';
import { editor } from './state/editor';
import { useEd } from './state/hooks';
import { isFragment } from './model/graph';

function editable(t: EventTarget | null): boolean {
  const el = t as HTMLElement | null;
  return !!el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
}

function Keys() {
  const rf = useReactFlow();
  useEffect(() => {
    let pastedAt = 0;
    const sizes = () => {
      const out: Record<string, [number, number]> = {};
      for (const n of rf.getNodes()) if (n.measured?.width) out[n.id] = [n.measured.width, n.measured.height ?? 100];
      return out;
    };
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key.toLowerCase() === 'v' && !editable(e.target) && !editor.s.dialog) {
        if (editor.paste()) pastedAt = Date.now();
        return; // no preventDefault: the paste event may bring a workflow from another program
      }
      if (handleKey(editor, e, sizes)) e.preventDefault();
    };
    const onPaste = (e: ClipboardEvent) => {
      if (editable(e.target) || editor.s.dialog) return;
      const text = e.clipboardData?.getData('text/plain') ?? '';
      if (!text) return;
      if (Date.now() - pastedAt < 1000) {
        try {
          if (isFragment(JSON.parse(text))) return; // already pasted from the shared clipboard
        } catch {
          return;
        }
      }
      if (editor.pasteText(text)) e.preventDefault();
    };
    const onUnload = () => editor.persistNow();
    window.addEventListener('keydown', onKey);
    window.addEventListener('paste', onPaste);
    window.addEventListener('beforeunload', onUnload);
    return () => {
      window.removeEventListener('keydown', onKey);
      window.removeEventListener('paste', onPaste);
      window.removeEventListener('beforeunload', onUnload);
    };
  }, [rf]);
  return null;
}

export function App() {
  const palette = useEd((s) => s.palette);
  return (
    <ReactFlowProvider>
      <Keys />
      <div className="ll-app">
        <Toolbar />
        <RunStatus />
        <div className="ll-main">
          {palette ? <Palette /> : null}
          <button
            type="button"
            className="ll-palette-toggle"
            aria-label={palette ? 'hide palette' : 'show palette'}
            onClick={() => editor.store.set({ palette: !palette })}
          >
            {palette ? '‹' : '›'}
          </button>
          <div className="ll-stage">
            <Breadcrumb />
            <Canvas />
          </div>
          <SidePanel />
        </div>
        <Dialogs />
        <Toasts />
      </div>
    </ReactFlowProvider>
  );
}
