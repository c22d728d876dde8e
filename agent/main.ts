// Entry point of the bundled agent (dist/agent.js). The CLI lands with the agent core.
import pkg from '../package.json' with { type: 'json' };

function main(): void {
  if (process.argv.includes('--version')) {
    console.log(`kubeseed-agent ${pkg.version}`);
    return;
  }
  console.error('usage: agent run|status|check [--root DIR]');
  process.exitCode = 2;
}

main();
