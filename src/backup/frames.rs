//! Decompressing a backup on every core: backups are written as a sequence of
//! independent zstd frames (`create::FRAME_INPUT` bytes of input each), which decode
//! in parallel and are handed on in order. A file of one large frame (a backup made
//! before frames, or by other tools) is decompressed as one stream, as before.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// A frame whose end is not found within this many compressed bytes is decompressed
/// as a stream from there on (bounded memory whatever the file holds).
const FRAME_SEARCH_LIMIT: usize = 128 << 20;
/// Compressed bytes read at a time.
const READ_CHUNK: usize = 4 << 20;

/// Why decompressing stopped.
#[derive(Debug)]
pub enum FrameError {
    /// The compressed data is damaged (or could not be read).
    Damaged(io::Error),
    /// The sink refused the decompressed bytes.
    Sink(io::Error),
}

/// What the reader hands on, in file order.
enum Piece {
    /// One frame, decoded by a worker.
    Frame(Receiver<io::Result<Vec<u8>>>),
    /// The rest of the file, decoded as one stream, in chunks.
    Stream(Receiver<io::Result<Vec<u8>>>),
}

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

/// Decompresses all of `input` (read to its end) with `workers` threads, giving the
/// decompressed bytes to `sink` in order.
pub fn decompress(
    input: &mut (impl Read + Send),
    workers: usize,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), FrameError> {
    decompress_owned(input, workers, |bytes| sink(&bytes))
}

/// `decompress`, handing on the buffers themselves (a frame's bytes are not copied).
pub fn decompress_owned(
    input: &mut (impl Read + Send),
    workers: usize,
    mut sink: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> Result<(), FrameError> {
    let workers = workers.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (piece_tx, piece_rx) = mpsc::sync_channel::<Piece>(workers * 2);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let jobs = Arc::clone(&job_rx);
            scope.spawn(move || loop {
                let job = jobs.lock().expect("job queue").recv();
                let Ok((frame, done)) = job else { return };
                let _ = done.send(zstd::stream::decode_all(&frame[..]));
            });
        }
        let reader = scope.spawn(move || read_frames(input, job_tx, piece_tx));
        let written = hand_on(piece_rx, &mut sink);
        // The reader ends once the pieces are taken or their receiver is gone.
        let read = reader.join().expect("frame reader");
        written?;
        read.map_err(FrameError::Damaged)
    })
}

/// Takes the pieces in order and gives their bytes to `sink`.
fn hand_on(
    pieces: Receiver<Piece>,
    sink: &mut impl FnMut(Vec<u8>) -> io::Result<()>,
) -> Result<(), FrameError> {
    for piece in pieces {
        match piece {
            Piece::Frame(rx) => {
                let data = rx
                    .recv()
                    .map_err(|_| FrameError::Damaged(io::Error::other("a frame decoder stopped")))?
                    .map_err(FrameError::Damaged)?;
                sink(data).map_err(FrameError::Sink)?;
            }
            Piece::Stream(rx) => {
                for chunk in rx {
                    sink(chunk.map_err(FrameError::Damaged)?).map_err(FrameError::Sink)?;
                }
            }
        }
    }
    Ok(())
}

/// Splits `input` into frames for the workers (and their places in order for the
/// writer); falls back to one stream when no frame end is in reach.
fn read_frames(
    input: &mut impl Read,
    jobs: SyncSender<Job>,
    pieces: SyncSender<Piece>,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut at_end = false;
    loop {
        match zstd::zstd_safe::find_frame_compressed_size(&pending) {
            Ok(n) if n > 0 && n <= pending.len() => {
                let rest = pending.split_off(n);
                let frame = std::mem::replace(&mut pending, rest);
                let (done_tx, done_rx) = mpsc::sync_channel(1);
                if pieces.send(Piece::Frame(done_rx)).is_err()
                    || jobs.send((frame, done_tx)).is_err()
                {
                    return Ok(()); // the writer stopped (its error is reported)
                }
                continue;
            }
            _ if at_end && pending.is_empty() => return Ok(()),
            _ if at_end || pending.len() >= FRAME_SEARCH_LIMIT => {
                return stream_rest(pending, input, pieces);
            }
            _ => {}
        }
        let start = pending.len();
        pending.resize(start + READ_CHUNK, 0);
        let n = read_full(input, &mut pending[start..])?;
        pending.truncate(start + n);
        at_end = n == 0;
    }
}

/// Decodes `pending` and the rest of `input` as one stream, in 1 MiB chunks.
fn stream_rest(
    pending: Vec<u8>,
    input: &mut impl Read,
    pieces: SyncSender<Piece>,
) -> io::Result<()> {
    let (tx, rx) = mpsc::sync_channel(4);
    if pieces.send(Piece::Stream(rx)).is_err() {
        return Ok(());
    }
    let mut decoder = match zstd::stream::read::Decoder::new(io::Cursor::new(pending).chain(input))
    {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(e));
            return Ok(());
        }
    };
    loop {
        let mut buf = vec![0u8; 1 << 20];
        match read_full(&mut decoder, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return Ok(());
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames as backups write them: each with its checksum.
    fn frames(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.include_checksum(true).unwrap();
            std::io::Write::write_all(&mut e, p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    fn run(compressed: &[u8], workers: usize) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        decompress(&mut io::Cursor::new(compressed), workers, |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn frames_come_out_in_order_on_any_number_of_workers() {
        let parts: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100_000 + i as usize]).collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let expected: Vec<u8> = parts.concat();
        for workers in [1, 2, 5] {
            assert_eq!(run(&frames(&refs), workers).unwrap(), expected);
        }
        assert_eq!(run(&[], 2).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn damage_and_truncation_are_errors() {
        let whole = frames(&[
            b"hello world".repeat(1000).as_slice(),
            b"second frame".as_slice(),
        ]);
        let cut = &whole[..whole.len() - 5];
        assert!(matches!(run(cut, 2), Err(FrameError::Damaged(_))));
        let mut flipped = whole.clone();
        flipped[20] ^= 0xff;
        assert!(run(&flipped, 2).is_err());
        // Trailing garbage after the last frame is damage too.
        let mut extra = whole.clone();
        extra.extend_from_slice(b"garbage");
        assert!(run(&extra, 2).is_err());
    }

    #[test]
    fn a_sink_error_stops_everything() {
        let parts: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10_000]).collect();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let compressed = frames(&refs);
        let mut calls = 0;
        let r = decompress(&mut io::Cursor::new(&compressed), 2, |_| {
            calls += 1;
            Err(io::Error::other("disk full"))
        });
        assert!(matches!(r, Err(FrameError::Sink(_))));
        assert_eq!(calls, 1);
    }
}
