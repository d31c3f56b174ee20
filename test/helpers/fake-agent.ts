import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FrameDecoder, type Frame } from '../../stage1-kvm/agent-protocol.js';

// A guest agent played by a test: a unix socket server standing in for a
// pod's agent port, running `script` on every frame the host sends. For
// the tests of the host's agent client against guests that do not play by
// the rules.

export type Script = (frames: Frame[], sock: net.Socket) => void;

export interface FakeAgent {
  socketPath: string;
  received: Frame[];
  sockets: net.Socket[];
  close: () => Promise<void>;
}

export async function fakeAgent(script: Script): Promise<FakeAgent> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rkt-agent-hostile-'));
  const socketPath = path.join(dir, 'agent.sock');
  const received: Frame[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    const d = new FrameDecoder();
    sock.on('data', (chunk) => {
      received.push(...d.push(chunk));
      script(received, sock);
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    received,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          fs.rmSync(dir, { recursive: true, force: true });
          resolve();
        });
      }),
  };
}

