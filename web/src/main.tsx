import { createRoot } from 'react-dom/client';
import '@xyflow/react/dist/style.css';
import './styles.css';
import { App } from './App';
import { editor } from './state/editor';

// the editor object, for the browser console and the end-to-end tests
(window as unknown as { latentloom: typeof editor }).latentloom = editor;

createRoot(document.getElementById('root')!).render(<App />);
void editor.start();
