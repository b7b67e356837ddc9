//! `kctl facts HOST` and `kctl ops HOST`: one read-only call each, printed as a table or JSON.

use super::{Context, connect, print, print_json};
use crate::error::Result;
use crate::host::Target;
use crate::output::{self, Format};

pub async fn facts(ctx: &Context, host: &Target) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let facts = client
        .facts()
        .await
        .map_err(|s| client.explain("Facts", &s))?;
    match ctx.format {
        Format::Human => print(&output::facts_human(
            &facts,
            time::OffsetDateTime::now_utc(),
        ))?,
        Format::Json => print_json(&output::facts_json(&facts))?,
    }
    Ok(0)
}

pub async fn ops(ctx: &Context, host: &Target, limit: u32) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let ops = client
        .list_operations(limit)
        .await
        .map_err(|s| client.explain("ListOperations", &s))?;
    match ctx.format {
        Format::Human => print(&output::operations_human(&ops))?,
        Format::Json => print_json(&output::operations_json(&ops))?,
    }
    Ok(0)
}
