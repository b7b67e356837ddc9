//! `kctl certs HOST` (one read-only call), `kctl certs HOST --retire NAME`, and `kctl renew HOST [NAME] [--force]` (an operation,
//! followed to its end like `kctl apply`).

use super::operation::follow_to_end;
use super::{Context, connect, print, print_json};
use crate::error::Result;
use crate::follow::Position;
use crate::host::Target;
use crate::output::{self, Format};

pub async fn list(ctx: &Context, host: &Target) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let certs = client
        .list_certificates()
        .await
        .map_err(|s| client.explain("ListCertificates", &s))?;
    match ctx.format {
        Format::Human => print(&output::certificates_human(&certs))?,
        Format::Json => print_json(&output::certificates_json(&certs))?,
    }
    Ok(0)
}

pub async fn renew(ctx: &Context, host: &Target, name: &str, force: bool) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let stream = client
        .renew_certificate(name, force)
        .await
        .map_err(|s| client.explain("RenewCertificate", &s))?;
    follow_to_end(ctx, &mut client, stream, Position::default()).await
}

pub async fn retire(ctx: &Context, host: &Target, name: &str) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let files = client
        .retire_certificate(name)
        .await
        .map_err(|s| client.explain("RetireCertificate", &s))?;
    match ctx.format {
        Format::Human => {
            let mut text = format!("retired {name}: no longer renewed or listed by {host}\n");
            if !files.is_empty() {
                text.push_str("its files stay in place (remove them when nothing uses them):\n");
                for f in &files {
                    text.push_str(&format!("  {f}\n"));
                }
            }
            print(&text)?
        }
        Format::Json => print_json(&serde_json::json!({ "retired": name, "files": files }))?,
    }
    Ok(0)
}
