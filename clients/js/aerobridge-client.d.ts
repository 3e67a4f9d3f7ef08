// Types for aerobridge-client (aerobridge-client.js).

/** A variable's value: number, string, or null (a non-finite number upstream). */
export type Value = number | string | null;

/** One catalog entry, in wire order. */
export interface Variable {
  name: string;
  type: "number" | "string";
  unit: string;
  writable: boolean;
}

/** One data message, applied. */
export interface Update {
  /** The `update_counter` of the frame it reflects. */
  updateCounter: number;
  /** µs since the UNIX epoch. */
  timestamp: number;
  /** The subscribed values that differ from the state before this update. */
  values: Record<string, Value>;
  /** The source's `data_valid`. */
  valid: boolean;
  keyframe: boolean;
}

/** A command the server accepted. */
export interface Ack {
  /** The first `update_counter` that shows it; null through a relay. */
  frame: number | null;
  /** Delivered to an upstream bridge (relay source). */
  relayed: boolean;
  raw: Record<string, unknown>;
}

export interface ConnectOptions {
  /** Names, or prefixes ending in `*`; every variable when absent. */
  vars?: string[];
  /** Updates per second (at most the server's rate); every frame when absent. */
  hz?: number;
  mode?: "delta" | "full";
  /** The server's --command-token (needed for `set`); sent as `?token=`. */
  token?: string;
  /** Milliseconds for connecting and for each request's answer (default 10000). */
  timeout?: number;
  /** Reconnect backoff: first delay and cap, ms (default [250, 5000]); jittered. */
  backoff?: [number, number];
  clientName?: string;
  /** A WebSocket class where there is no global one (Node 20 without --experimental-websocket). */
  WebSocket?: unknown;
}

export type ErrorCode =
  | "bad_url" | "connect_failed" | "timeout" | "disconnected" | "closed" | "not_v2" | "no_websocket"
  | "unknown_variable" | "read_only" | "out_of_range" | "not_a_number" | "unauthorized" | "rate_limited"
  | "too_many_subscriptions" | "too_many_profiles" | "bad_request" | (string & {});

export class ClientError extends Error {
  readonly code: ErrorCode;
  /** The server's words (or the client's). */
  readonly serverMessage: string;
  readonly details: Record<string, unknown>;
}

export declare const SUBPROTOCOL: "aerobridge.v2";

export declare function checkUrl(url: string): URL;

export interface Client extends AsyncIterable<Update> {}
export declare class Client {
  readonly url: string;
  /** Every subscribed variable's value: the full view rebuilt from keyframes and deltas. */
  readonly state: Record<string, Value>;
  readonly updateCounter: number | null;
  readonly timestamp: number | null;
  readonly catalog: Map<string, Variable>;
  readonly session: string | null;
  /** 2, or 1 for a plain v1 bridge (read-only). */
  readonly protocol: 1 | 2;
  readonly welcome: Record<string, unknown>;
  readonly subscription: { vars: string[]; every: number; hz: number; profile: number; sub: number; mode: string };
  readonly connected: boolean;
  /** Data not live (`data_valid` 0), no update within two periods, or disconnected. */
  readonly stale: boolean;
  /** ms between updates. */
  readonly period: number;
  readonly reconnects: number;
  readonly resumed: boolean | null;
  readonly updatesDropped: number;
  readonly lastError: string | null;
  readonly lastUpdate: Update | null;
  /** WebSocket extensions agreed (e.g. "permessage-deflate; …"), "" for none. */
  readonly extensions: string;
  /** Characters of the last message / of all messages received (after inflating). */
  readonly lastMessageBytes: number;
  readonly bytesReceived: number;
  on(event: "update", listener: (update: Update) => void): () => void;
  on(event: "stale", listener: (stale: boolean) => void): () => void;
  on(event: "connected", listener: (session: string) => void): () => void;
  on(event: "disconnected", listener: (reason: string) => void): () => void;
  set(name: string, value: number | string): Promise<Ack>;
  set(values: Record<string, number | string>): Promise<Ack>;
  ping(): Promise<number>;
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Update>;
}

/** The I/O-free state (for tests and benchmarks). */
export declare class SessionState {
  state: Record<string, Value>;
  updateCounter: number | null;
  types: Map<string, string>;
  subscribed(ack: { vars: string[]; profile: number; every?: number }): void;
  data(message: Record<string, unknown>): Update | null;
}

export declare function connect(url: string, options?: ConnectOptions): Promise<Client>;
