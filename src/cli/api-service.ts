import type { Command } from 'commander';
import { globalsOf } from './context.js';

export function register(program: Command): void {
  program
    .command('api-service')
    .description("run rkt's read-only gRPC API service (v1alpha) until SIGINT or SIGTERM")
    .option('--listen <address>', 'address to listen for client API requests', 'localhost:15441')
    .action(async (opts: { listen: string }, cmd: Command) => {
      const { runApiService } = await import('../api/server.js');
      await runApiService(globalsOf(cmd), opts.listen);
    });
}
