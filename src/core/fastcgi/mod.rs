//! FastCGI 1.0 codec: records, name-value pairs, and the response-side decoder.

pub mod cgi_headers;
pub mod params;
pub mod record;
pub mod response;
#[cfg(test)]
mod test_rng;
