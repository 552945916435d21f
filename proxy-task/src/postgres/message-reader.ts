/**
 * Awaitable framed reads from a socket, for the short request/response exchanges of the startup phase.
 * The relay phase does not use it: there, 'data' events drive a pump with explicit backpressure.
 */
import type { Socket } from 'node:net';
import { ClientFramer, type FramedMessage } from './client-framer.ts';

export class ConnectionClosedError extends Error {
  constructor() {
    super('the client closed the connection');
    this.name = 'ConnectionClosedError';
  }
}

export class StartupTimeoutError extends Error {
  constructor() {
    super('the client did not complete the startup in time');
    this.name = 'StartupTimeoutError';
  }
}

export class MessageReader {
  readonly framer: ClientFramer;
  private socket!: Socket;
  private waiter: { resolve: (m: FramedMessage) => void; reject: (e: unknown) => void } | undefined;
  private failure: unknown;
  private readonly onData = (chunk: Buffer): void => {
    this.framer.push(chunk);
    this.wake();
  };
  private readonly onEnd = (): void => this.fail(new ConnectionClosedError());
  private readonly onError = (err: Error): void => this.fail(err);

  constructor(socket: Socket, maxMessageBytes: number) {
    this.framer = new ClientFramer(maxMessageBytes);
    this.attach(socket);
  }

  /** Moves to another socket object (after the TLS upgrade). */
  attach(socket: Socket): void {
    if (this.socket) this.detach();
    this.socket = socket;
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
  }

  /** The next whole message; rejects on close, error, bad framing, or when `deadline` (epoch ms) passes. */
  next(deadline: number): Promise<FramedMessage> {
    if (this.failure) return Promise.reject(this.failure);
    const m = this.framer.next();
    if (m) return Promise.resolve(m);
    return new Promise<FramedMessage>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new StartupTimeoutError()), Math.max(0, deadline - Date.now()));
      this.waiter = {
        resolve: (msg) => {
          clearTimeout(timer);
          resolve(msg);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  private wake(): void {
    if (!this.waiter) return;
    let m: FramedMessage | undefined;
    try {
      m = this.framer.next();
    } catch (err) {
      this.fail(err);
      return;
    }
    if (!m) return;
    const w = this.waiter;
    this.waiter = undefined;
    w.resolve(m);
  }

  private fail(err: unknown): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(this.failure);
  }
}
