import { main } from '../main.js';
import { aadLoginForWindows } from './extension.js';

await main(aadLoginForWindows);
