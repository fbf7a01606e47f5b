//! The array computations behind the built-in service, and the encodings
//! they are served in. Pure: parameters in, numbers out, numbers in, bytes
//! out. No HTTP, no cache.
//!
//! Encodings:
//! - `npy`: NumPy's `.npy` format, version 1.0, so `numpy.load` reads it;
//! - `raw`: the elements as little-endian bytes, nothing else (the dtype
//!   and shape travel in response headers);
//! - `csv`: one row per line;
//! - `json`: `{"dtype": "uint32", "shape": [..], "data": [..]}`;
//! - `bmp`: a 24-bit Windows bitmap, for 2-D arrays (browsers show it).
//!
//! Each encoder works out its exact length first and writes into one
//! shared buffer of that size ([`Bytes`]), which the cache then keeps as it
//! is. Building a `Vec` and converting it would hold the encoding twice
//! while the copy is made (the bytes of an `Arc<[u8]>` sit after its
//! counts, so a `Vec`'s buffer cannot become one), and growing it by
//! doubling would touch more still: for the largest arrays, tens of
//! megabytes more for each computation in flight.

use std::io::Write as _;
use std::sync::Arc;

/// An encoding: the bytes the cache keeps and every response shares.
pub type Bytes = Arc<[u8]>;

/// A dense array of `u32` in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u32>,
}

impl Array {
    /// The size in bytes of the elements.
    pub fn byte_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// The ways an array can be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy` v1.0.
    Npy,
    /// Little-endian elements only.
    Raw,
    /// Comma-separated rows.
    Csv,
    /// A JSON object with dtype, shape and data.
    Json,
    /// A 24-bit bitmap (2-D arrays only).
    Bmp,
}

impl Format {
    /// Parses a `format=` value.
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "npy" => Format::Npy,
            "raw" => Format::Raw,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "bmp" => Format::Bmp,
            _ => return None,
        })
    }

    /// The name used in `format=`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Npy => "npy",
            Format::Raw => "raw",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Bmp => "bmp",
        }
    }

    /// The media type of the encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Npy | Format::Raw => "application/octet-stream",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Bmp => "image/bmp",
        }
    }
}

/// Every prime below `n`, by a sieve of Eratosthenes over odd numbers
/// (half the memory of a plain sieve: `n / 2` bytes at most).
pub fn primes_below(n: u32) -> Array {
    let mut data = Vec::new();
    if n > 2 {
        data.push(2);
    }
    // composite[i] stands for the odd number 2i + 1.
    let half = n as usize / 2;
    let mut composite = vec![false; half];
    let mut i = 1;
    while i < half {
        let p = 2 * i + 1;
        if !composite[i] {
            data.push(p as u32);
            let mut j = (p * p) / 2;
            while j < half {
                composite[j] = true;
                j += p;
            }
        }
        i += 1;
    }
    Array {
        shape: vec![data.len()],
        data,
    }
}

/// Parameters of a Mandelbrot rendering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mandelbrot {
    /// Pixels across.
    pub width: usize,
    /// Pixels down.
    pub height: usize,
    /// Iterations before a point is taken to be inside the set.
    pub max_iter: u32,
    /// The real part at the centre.
    pub cx: f64,
    /// The imaginary part at the centre.
    pub cy: f64,
    /// The width of the view in the complex plane.
    pub scale: f64,
}

impl Mandelbrot {
    /// The escape iteration of every pixel (`max_iter` for points that do
    /// not escape), as a `height × width` array.
    pub fn compute(&self) -> Array {
        let mut data = Vec::with_capacity(self.width * self.height);
        let step = self.scale / self.width.max(1) as f64;
        let left = self.cx - step * self.width as f64 / 2.0;
        let top = self.cy + step * self.height as f64 / 2.0;
        for row in 0..self.height {
            let ci = top - step * (row as f64 + 0.5);
            for col in 0..self.width {
                let cr = left + step * (col as f64 + 0.5);
                let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0);
                while n < self.max_iter && zr * zr + zi * zi <= 4.0 {
                    let t = zr * zr - zi * zi + cr;
                    zi = 2.0 * zr * zi + ci;
                    zr = t;
                    n += 1;
                }
                data.push(n);
            }
        }
        Array {
            shape: vec![self.height, self.width],
            data,
        }
    }
}

/// A zeroed buffer of `len` bytes, not yet shared, for an encoder to fill
/// in place. One allocation of exactly `len`: collecting an iterator of
/// known length into an `Arc<[u8]>` allocates it once, with no `Vec` in
/// between.
fn buffer(len: usize) -> Bytes {
    std::iter::repeat_n(0u8, len).collect()
}

/// The bytes of a buffer made by [`buffer`] and not yet shared.
fn unshared(bytes: &mut Bytes) -> &mut [u8] {
    Arc::get_mut(bytes).expect("a new buffer is not shared yet")
}

/// The length of `v` in decimal.
fn decimal_len(v: u32) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Writes `v` in decimal at the start of `out`, and moves `out` past it.
fn put_decimal(out: &mut &mut [u8], v: u32) {
    write!(out, "{v}").expect("the buffer was sized for every digit");
}

/// Writes `bytes` at the start of `out`, and moves `out` past them.
fn put(out: &mut &mut [u8], bytes: &[u8]) {
    out.write_all(bytes)
        .expect("the buffer was sized for every byte");
}

/// Encodes `a`; `None` when the format does not fit the array (a bitmap of
/// a 1-D array).
pub fn encode(a: &Array, format: Format) -> Option<Bytes> {
    Some(match format {
        Format::Npy => npy(a),
        Format::Raw => raw(a),
        Format::Csv => csv(a),
        Format::Json => json(a),
        Format::Bmp => bmp(a)?,
    })
}

/// `.npy` v1.0: magic, version, a little-endian u16 header length, a Python
/// dict literal padded with spaces and ending in a newline so that the data
/// starts on a 64-byte boundary (what NumPy itself writes), then the data.
pub fn npy(a: &Array) -> Bytes {
    let shape = match a.shape.as_slice() {
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<u4', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = buffer(10 + header.len() + a.byte_len());
    let mut out = unshared(&mut bytes);
    put(&mut out, b"\x93NUMPY\x01\x00");
    put(&mut out, &(header.len() as u16).to_le_bytes());
    put(&mut out, header.as_bytes());
    put_elements(out, a);
    bytes
}

/// The elements as little-endian bytes.
pub fn raw(a: &Array) -> Bytes {
    let mut bytes = buffer(a.byte_len());
    put_elements(unshared(&mut bytes), a);
    bytes
}

/// Fills `out`, exactly `a.byte_len()` long, with the elements of `a` as
/// little-endian bytes.
fn put_elements(out: &mut [u8], a: &Array) {
    for (dst, v) in out.chunks_exact_mut(4).zip(&a.data) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

/// The length of the last dimension: the elements per CSV line.
fn row_len(a: &Array) -> usize {
    a.shape.last().copied().unwrap_or(1).max(1)
}

/// The digits of every element: what the text encodings hold beyond their
/// separators.
fn digits(a: &Array) -> usize {
    a.data.iter().map(|&v| decimal_len(v)).sum()
}

fn csv(a: &Array) -> Bytes {
    // Each element is followed by one separator: a comma, or the newline
    // that ends its line.
    let mut bytes = buffer(digits(a) + a.data.len());
    let mut out = unshared(&mut bytes);
    let per_line = if a.shape.len() == 1 { 1 } else { row_len(a) };
    for row in a.data.chunks(per_line) {
        for (i, &v) in row.iter().enumerate() {
            if i > 0 {
                put(&mut out, b",");
            }
            put_decimal(&mut out, v);
        }
        put(&mut out, b"\n");
    }
    debug_assert!(out.is_empty(), "csv: {} bytes unwritten", out.len());
    bytes
}

fn json(a: &Array) -> Bytes {
    let dims: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
    let head = format!(
        "{{\"dtype\":\"uint32\",\"shape\":[{}],\"data\":[",
        dims.join(",")
    );
    let tail = b"]}\n";
    let commas = a.data.len().saturating_sub(1);
    let mut bytes = buffer(head.len() + digits(a) + commas + tail.len());
    let mut out = unshared(&mut bytes);
    put(&mut out, head.as_bytes());
    for (i, &v) in a.data.iter().enumerate() {
        if i > 0 {
            put(&mut out, b",");
        }
        put_decimal(&mut out, v);
    }
    put(&mut out, tail);
    debug_assert!(out.is_empty(), "json: {} bytes unwritten", out.len());
    bytes
}

/// A 24-bit bottom-up bitmap: `BITMAPFILEHEADER`, `BITMAPINFOHEADER`, then
/// rows padded to 4 bytes. Values map to a smooth palette scaled to the
/// array's maximum; the maximum itself (points inside the set) is black.
fn bmp(a: &Array) -> Option<Bytes> {
    let [height, width] = a.shape[..] else {
        return None;
    };
    let row_bytes = (width * 3).next_multiple_of(4);
    let image = row_bytes.checked_mul(height)?;
    let file_len = u32::try_from(54 + image).ok()?;
    let max = a.data.iter().copied().max().unwrap_or(0).max(1);
    let mut bytes = buffer(file_len as usize);
    let mut out = unshared(&mut bytes);
    put(&mut out, b"BM");
    put(&mut out, &file_len.to_le_bytes());
    put(&mut out, &[0; 4]);
    put(&mut out, &54u32.to_le_bytes());
    put(&mut out, &40u32.to_le_bytes());
    put(&mut out, &(width as i32).to_le_bytes());
    put(&mut out, &(height as i32).to_le_bytes());
    put(&mut out, &1u16.to_le_bytes());
    put(&mut out, &24u16.to_le_bytes());
    put(&mut out, &[0; 4]); // BI_RGB, no compression
    put(&mut out, &(image as u32).to_le_bytes());
    put(&mut out, &2835u32.to_le_bytes()); // 72 dpi
    put(&mut out, &2835u32.to_le_bytes());
    put(&mut out, &[0; 8]);
    // Rows bottom-up, each padded with zeros (the buffer's) to 4 bytes.
    for (row, dst) in a
        .data
        .chunks(width.max(1))
        .rev()
        .zip(out.chunks_exact_mut(row_bytes.max(1)))
    {
        for (&v, px) in row.iter().zip(dst.chunks_exact_mut(3)) {
            px.copy_from_slice(&palette(v, max));
        }
    }
    Some(bytes)
}

/// Blue-gold-white, by the fraction of the maximum; the maximum is black.
fn palette(v: u32, max: u32) -> [u8; 3] {
    if v >= max {
        return [0, 0, 0];
    }
    let t = (f64::from(v) / f64::from(max)).sqrt();
    let r = (255.0 * (3.0 * t).min(1.0)) as u8;
    let g = (255.0 * (2.0 * t - 0.3).clamp(0.0, 1.0)) as u8;
    let b = (255.0 * (0.4 + 0.6 * t).min(1.0)) as u8;
    [b, g, r]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_small_cases() {
        assert_eq!(primes_below(0).data, Vec::<u32>::new());
        assert_eq!(primes_below(2).data, Vec::<u32>::new());
        assert_eq!(primes_below(3).data, vec![2]);
        assert_eq!(
            primes_below(30).data,
            vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
        );
        assert_eq!(primes_below(1_000_000).data.len(), 78_498);
        assert_eq!(primes_below(1_000_000).shape, vec![78_498]);
    }

    #[test]
    fn mandelbrot_shape_and_symmetry() {
        let m = Mandelbrot {
            width: 64,
            height: 32,
            max_iter: 100,
            cx: -0.5,
            cy: 0.0,
            scale: 3.0,
        }
        .compute();
        assert_eq!(m.shape, vec![32, 64]);
        assert_eq!(m.data.len(), 64 * 32);
        // Symmetric about the real axis, which runs between rows 15 and 16.
        for col in 0..64 {
            assert_eq!(m.data[col], m.data[31 * 64 + col]);
        }
        // The centre (-0.5, 0) is inside the set; the corner is not.
        assert_eq!(m.data[16 * 64 + 32], 100);
        assert!(m.data[0] < 5);
    }

    /// Parses a `.npy` v1.0 file the way NumPy's reader does.
    fn parse_npy(bytes: &[u8]) -> (String, Vec<u32>) {
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data must start 64-byte aligned");
        let header = std::str::from_utf8(&bytes[10..10 + hlen])
            .unwrap()
            .to_owned();
        assert!(header.ends_with('\n'));
        let data = bytes[10 + hlen..]
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (header, data)
    }

    #[test]
    fn npy_round_trips() {
        let a = primes_below(100);
        let (header, data) = parse_npy(&npy(&a));
        assert!(header.starts_with("{'descr': '<u4', 'fortran_order': False, 'shape': (25,), }"));
        assert_eq!(data, a.data);
        let m = Array {
            shape: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let (header, data) = parse_npy(&npy(&m));
        assert!(header.contains("'shape': (2, 3), }"), "{header}");
        assert_eq!(data, m.data);
    }

    #[test]
    fn text_encodings() {
        let m = Array {
            shape: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(&*csv(&m), b"1,2,3\n4,5,6\n");
        assert_eq!(
            &*json(&m),
            b"{\"dtype\":\"uint32\",\"shape\":[2,3],\"data\":[1,2,3,4,5,6]}\n"
        );
        let v = primes_below(8);
        assert_eq!(&*csv(&v), b"2\n3\n5\n7\n");
        assert_eq!(&*raw(&v), [2, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0]);
    }

    /// The text encodings written the plain way, growing a `String`.
    fn reference_text(a: &Array) -> (String, String) {
        let per_line = if a.shape.len() == 1 { 1 } else { row_len(a) };
        let csv: String = a
            .data
            .chunks(per_line)
            .map(|row| {
                let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                cells.join(",") + "\n"
            })
            .collect();
        let dims: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
        let data: Vec<String> = a.data.iter().map(|v| v.to_string()).collect();
        let json = format!(
            "{{\"dtype\":\"uint32\",\"shape\":[{}],\"data\":[{}]}}\n",
            dims.join(","),
            data.join(",")
        );
        (csv, json)
    }

    /// Each encoder sizes its buffer before writing: every length of
    /// decimal, empty arrays and one-element rows come out exactly as
    /// written the plain way, with no byte short or over.
    #[test]
    fn encodings_fill_their_buffers_exactly() {
        let edges = vec![
            0,
            9,
            10,
            99,
            100,
            65_535,
            999_999_999,
            1_000_000_000,
            u32::MAX,
        ];
        let arrays = [
            Array {
                shape: vec![0],
                data: vec![],
            },
            Array {
                shape: vec![1],
                data: vec![0],
            },
            Array {
                shape: vec![edges.len()],
                data: edges.clone(),
            },
            Array {
                shape: vec![3, 3],
                data: edges.clone(),
            },
            Array {
                shape: vec![9, 1],
                data: edges.clone(),
            },
            Array {
                shape: vec![2, 0],
                data: vec![],
            },
        ];
        for a in &arrays {
            let (csv_text, json_text) = reference_text(a);
            assert_eq!(std::str::from_utf8(&csv(a)).unwrap(), csv_text, "{a:?}");
            assert_eq!(std::str::from_utf8(&json(a)).unwrap(), json_text, "{a:?}");
            assert_eq!(raw(a).len(), a.byte_len());
            let (_, data) = parse_npy(&npy(a));
            assert_eq!(data, a.data);
        }
        // Rows of 1, 2 and 3 pixels take 1, 2 and 3 bytes of padding.
        for width in [1, 2, 3, 4] {
            let a = Array {
                shape: vec![2, width],
                data: (0..2 * width as u32).collect(),
            };
            let b = bmp(&a).unwrap();
            assert_eq!(b.len(), 54 + 2 * (width * 3).next_multiple_of(4));
        }
        assert_eq!(bmp(&arrays[5]).unwrap().len(), 54);
    }

    #[test]
    fn bitmap_layout() {
        let m = Array {
            shape: vec![2, 3],
            data: vec![0, 1, 2, 3, 4, 5],
        };
        let b = bmp(&m).unwrap();
        let row = 12; // 3 pixels × 3 bytes, padded to 4
        assert_eq!(b.len(), 54 + 2 * row);
        assert_eq!(&b[..2], b"BM");
        assert_eq!(
            u32::from_le_bytes(b[2..6].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(i32::from_le_bytes(b[18..22].try_into().unwrap()), 3);
        assert_eq!(i32::from_le_bytes(b[22..26].try_into().unwrap()), 2);
        // Bottom-up: the last pixel of the file's first row is element 5, the maximum.
        assert_eq!(&b[54 + 6..54 + 9], &[0, 0, 0]);
        assert!(bmp(&primes_below(10)).is_none());
    }
}
