//! A reader that hands out its bytes at most `piece` at a time, as a pipe
//! may: for checking that how input arrives changes nothing.

/// Hands out `data` at most `piece` bytes per read.
pub struct Pieces<'a> {
    pub data: &'a [u8],
    pub piece: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
