import { main } from '../main.js';

// The extension is loaded after the verb: `--version` loads nothing (src/main.ts).
void main(async () => (await import('./extension.js')).aadLoginForWindows);
