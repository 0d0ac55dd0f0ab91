import './styles.css';
import { render } from 'preact';
import { restore } from './api.js';
import { App } from './app';

void restore();
render(<App />, document.getElementById('app') as HTMLElement);
