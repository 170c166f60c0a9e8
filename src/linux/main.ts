import { main } from '../main.js';
import { aadSshLoginForLinux } from './extension.js';

await main(aadSshLoginForLinux);
