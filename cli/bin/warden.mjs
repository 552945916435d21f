#!/usr/bin/env node
// The `warden` command. Runs the TypeScript sources directly through tsx, so `npx warden` works right
// after `npm ci` with no build step.
import { register } from 'tsx/esm/api';

register();
await import('../main.ts');
